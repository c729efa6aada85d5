"""Exact int8 x int8 -> int32 matrix products (W8A8 layers): our C kernel (int8_gemm.c, AVX512-VNNI
where the CPU has it), compiled on first use like kernels.c, or NumPy in float64 (exact too: every
sum of int8 products stays far below 2^53). NumPy only, no torch.

We do not use torch._int_mm: it has been reported to give wrong results on some AMD CPUs, and on
this class of machine it measured slower than a float32 matmul.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tinylm.quantize import kernels

SOURCE = Path(__file__).with_name("int8_gemm.c")
ROWS, PANEL = 6, 32  # the kernel's tile: activation rows x outputs (see int8_gemm.c)


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (no compiler, TINYLM_KERNELS=numpy, or a failed build)."""
    if os.environ.get("TINYLM_KERNELS") == "numpy":
        return None
    from tinylm.data.download import cache_dir

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(kernels.FLAGS).encode() + kernels._cpu().encode())
    path = cache_dir() / "kernels" / f"tinylm_int8_{key.hexdigest()[:16]}.so"
    try:
        if not path.is_file() and not kernels.compile_library(path, source=SOURCE):
            return None
        with kernels.sleeping_threads():  # see there
            lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.pack_weights.argtypes = [p, p, i, i, i]
    lib.matmul_i8.argtypes = [p, p, p, p, i, i, i, i]
    lib.quantize_rows.argtypes = [p, p, p, i, i, i, i, i]
    lib.rescale.argtypes = [p, p, p, p, p, i, i, i]
    lib.pack_weights.restype = lib.matmul_i8.restype = lib.quantize_rows.restype = lib.rescale.restype = None
    return lib


@dataclass
class Packed:
    """An int8 weight matrix (m, n) as the kernel reads it."""

    w: np.ndarray  # int8 (m, n), as stored
    panels: np.ndarray | None  # int8 (m_pad / 16, n4, 64); None without the compiled kernel
    wsum: np.ndarray  # int32 (m_pad,): sum of each row, zero for padding rows

    @property
    def n4(self) -> int:
        return -(-self.w.shape[1] // 4)


def pack(w: np.ndarray) -> Packed:
    w = np.ascontiguousarray(w, dtype=np.int8)
    m, n = w.shape
    m_pad = -(-m // PANEL) * PANEL
    wsum = np.zeros(m_pad, dtype=np.int32)
    wsum[:m] = w.sum(axis=1, dtype=np.int32)
    lib = library()
    if lib is None:
        return Packed(w, None, wsum)
    padded = np.zeros((m_pad, n), dtype=np.int8)
    padded[:m] = w
    panels = np.empty((m_pad // 16, -(-n // 4), 64), dtype=np.int8)
    lib.pack_weights(panels.ctypes.data, padded.ctypes.data, m_pad, n, panels.shape[1])
    return Packed(w, panels, wsum)


def matmul(x: np.ndarray, w: Packed, threads: int | None = None) -> np.ndarray:
    """x (B, n) int8 @ w.T -> (B, m) int32, exactly."""
    lib = library()
    m, n = w.w.shape
    if lib is None or w.panels is None:
        return np.matmul(x.astype(np.float64), w.w.T.astype(np.float64)).astype(np.int32)
    B = x.shape[0]
    b_pad, m_pad = -(-B // ROWS) * ROWS, w.wsum.size
    xu = np.full((b_pad, w.n4 * 4), 128, dtype=np.uint8)  # x + 128; padding is x = 0
    xu[:B, :n] = (x.astype(np.int16) + 128).astype(np.uint8)
    y = np.empty((b_pad, m_pad), dtype=np.int32)
    lib.matmul_i8(y.ctypes.data, xu.ctypes.data, w.panels.ctypes.data, w.wsum.ctypes.data, b_pad, w.n4, m_pad,
                  threads or kernels.default_threads())  # fmt: skip
    return y[:B, :m]


def linear(x: np.ndarray, w: Packed, w_scale: np.ndarray, bias: np.ndarray | None, threads: int) -> np.ndarray | None:
    """A W8A8 layer in C: x (B, n) float32 rounded to int8 per row, times w, back to float32 (B, m_pad)
    with w_scale (m_pad,) and bias (m_pad,) or None; None without the compiled kernel."""
    lib = library()
    if lib is None or w.panels is None:
        return None
    x = np.ascontiguousarray(x, dtype=np.float32)
    B, n = x.shape
    b_pad, m_pad = -(-B // ROWS) * ROWS, w.wsum.size
    xu, sx = np.empty((b_pad, w.n4 * 4), dtype=np.uint8), np.empty(b_pad, dtype=np.float32)
    lib.quantize_rows(xu.ctypes.data, sx.ctypes.data, x.ctypes.data, B, b_pad, n, w.n4, threads)
    acc = np.empty((b_pad, m_pad), dtype=np.int32)
    lib.matmul_i8(acc.ctypes.data, xu.ctypes.data, w.panels.ctypes.data, w.wsum.ctypes.data, b_pad, w.n4, m_pad,
                  threads)  # fmt: skip
    y = np.empty((b_pad, m_pad), dtype=np.float32)
    lib.rescale(y.ctypes.data, acc.ctypes.data, sx.ctypes.data, w_scale.ctypes.data,
                None if bias is None else bias.ctypes.data, b_pad, m_pad, threads)  # fmt: skip
    return y[:B]
