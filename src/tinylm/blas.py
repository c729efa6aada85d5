"""Tell NumPy's OpenBLAS how many threads to use after it has loaded (Linux, through ctypes).

OpenBLAS reads OPENBLAS_NUM_THREADS once, when NumPy loads it. `tinylm.threads.use_threads` sets that
variable, but by then the CLI has usually imported NumPy already (building the parsers does), so the
count would be ignored and BLAS would use every core. OpenBLAS has a setter for this; NumPy does not
expose it (threadpoolctl does, and is not a dependency), so we find the loaded library and call it.
Only OpenBLAS builds are handled, NumPy's wheels included; anything else is left alone.
"""

from __future__ import annotations

import ctypes
import sys

# the setter as OpenBLAS names it: NumPy's wheels bundle scipy-openblas (64-bit ints, symbols renamed)
SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
           "openblas_set_num_threads")  # fmt: skip


def set_blas_threads(n: int) -> int:
    """Set the thread count of every OpenBLAS this process has loaded; returns how many were set."""
    done = 0
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same library, not a second copy
        except OSError:
            continue
        setter = next((getattr(lib, name) for name in SETTERS if hasattr(lib, name)), None)
        if setter is not None:
            setter.argtypes, setter.restype = (ctypes.c_int,), None
            setter(n)
            done += 1
    return done


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (from /proc/self/maps; Linux only)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/") and ".so" in p)
