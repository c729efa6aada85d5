"""Keep the memory a training step frees, for the next step (glibc's malloc, through ctypes).

Why: every step allocates the same activations again (the attention probabilities alone are 10 MB a
layer for stories260K at batch 8 x 256). By default glibc serves arrays that large with fresh `mmap`
pages, or trims its heap when they are freed, so each step touches brand-new memory and pays a page
fault per 4 KiB: measured 10,000 faults and about a quarter of a stories260K step. With the two limits
raised, freed arrays stay in the heap and the next step reuses pages that are already mapped. The cost
is that the process keeps its peak memory, which a training run reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
LIMIT = 1 << 30  # bytes: arrays up to 1 GiB come from the heap, and freed memory is never handed back


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to do
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, LIMIT))
