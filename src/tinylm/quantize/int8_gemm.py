"""Exact int8 x int8 -> int32 matrix products (W8A8 layers): our C kernel (int8_gemm.c: AVX512-VNNI,
AVX-VNNI, AVX2 or plain C, whichever -march=native gives), compiled on first use like kernels.c, or
NumPy in float64 (exact too: every sum of int8 products stays far below 2^53). NumPy only, no torch.

We do not use torch._int_mm: it has been reported to give wrong results on some AMD CPUs, and on
this class of machine it measured slower than a float32 matmul.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache

import numpy as np

from tinylm.quantize import kernels

SOURCE = kernels.SOURCE.with_name("int8_gemm.c")
PANEL = 32  # outputs are padded to whole tiles of every path (see int8_gemm.c)
# each inner loop: the flags that build it anywhere, and the CPU flags (Linux's names) it needs to run
PATHS = {
    "avx512-vnni": (("-march=x86-64-v4", "-mavx512vnni"), {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}),
    "avx-vnni": (("-march=x86-64-v3", "-mavxvnni"), {"avx2", "fma", "bmi2", "movbe", "avx_vnni"}),
    "avx2": (("-march=x86-64-v3",), {"avx2", "fma", "bmi2", "movbe"}),
    "c": (("-march=x86-64",), set()),
}


class Kernel:
    """One build of int8_gemm.c: its inner loop ("avx512-vnni", "avx-vnni", "avx2" or "c") and layout."""

    def __init__(self, lib: ctypes.CDLL):
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.kernel_path.restype = ctypes.c_char_p
        lib.pack_weights.argtypes = [p, p, i, i, i]
        lib.matmul_i8.argtypes = [p, p, p, p, i, i, i, i]
        lib.linear_w8a8.argtypes = [p] * 8 + [i] * 5
        lib.pack_weights.restype = lib.linear_w8a8.restype = None
        self.lib, self.path = lib, lib.kernel_path().decode()
        self.rows = lib.tile_rows()  # activation rows are padded to a multiple of it
        self.group = lib.group_inputs()  # inputs per panel step: 4 bytes (VNNI) or 2 int16
        self.act = np.dtype(np.uint8 if lib.activation_bytes() == 1 else np.int16)
        self.weight = np.dtype(np.int8 if self.group == 4 else np.int16)

    def steps(self, n: int) -> int:
        return -(-n // self.group)

    def pack(self, w: np.ndarray, m_pad: int) -> np.ndarray:
        """w (m, n) int8 -> the kernel's panels (m_pad / 16, steps, 64 bytes)."""
        m, n = w.shape
        padded = np.zeros((m_pad, n), dtype=np.int8)
        padded[:m] = w
        panels = np.empty((m_pad // 16, self.steps(n), 64 // self.weight.itemsize), dtype=self.weight)
        self.lib.pack_weights(panels.ctypes.data, padded.ctypes.data, m_pad, n, self.steps(n))
        return panels


def build(march: tuple[str, ...] = ("-march=native",)) -> Kernel | None:
    """int8_gemm.c compiled with `march` in place of -march=native (cached), or None if we cannot."""
    flags = tuple(f for f in kernels.FLAGS if f != "-march=native") + march
    path = kernels.built("tinylm_int8", SOURCE, flags=flags)
    try:
        if path is None:
            return None
        with kernels.briefly_spinning_threads():  # see there
            return Kernel(ctypes.CDLL(str(path)))
    except OSError:
        return None


def runs_here(path: str) -> bool:
    """Whether this CPU has what PATHS[path] needs."""
    return PATHS[path][1] <= set(kernels._cpu().split())


@cache
def kernel() -> Kernel | None:
    """The kernel for this CPU, or None (no compiler, TINYLM_KERNELS=numpy, or a failed build)."""
    return build()


@dataclass
class Packed:
    """An int8 weight matrix (m, n) as a kernel reads it."""

    w: np.ndarray  # int8 (m, n), as stored
    panels: np.ndarray | None  # the kernel's layout; None for NumPy
    wsum: np.ndarray  # int32 (m_pad,): sum of each row, zero for padding rows
    kernel: Kernel | None = None


def pack(w: np.ndarray, kern: Kernel | None = None) -> Packed:
    """w for `kern` (default: this CPU's kernel, or NumPy without one)."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    m_pad = -(-w.shape[0] // PANEL) * PANEL
    wsum = np.zeros(m_pad, dtype=np.int32)
    wsum[: w.shape[0]] = w.sum(axis=1, dtype=np.int32)
    kern = kern or kernel()
    return Packed(w, None if kern is None else kern.pack(w, m_pad), wsum, kern)


def matmul(x: np.ndarray, w: Packed, threads: int | None = None) -> np.ndarray:
    """x (B, n) int8 @ w.T -> (B, m) int32, exactly."""
    m, n = w.w.shape
    if w.kernel is None or w.panels is None:
        return np.matmul(x.astype(np.float64), w.w.T.astype(np.float64)).astype(np.int32)
    B = x.shape[0]
    b_pad = -(-B // w.kernel.rows) * w.kernel.rows
    xp = np.zeros((b_pad, n), dtype=np.int8)
    xp[:B] = x
    y = np.empty((b_pad, w.wsum.size), dtype=np.int32)
    if w.kernel.lib.matmul_i8(y.ctypes.data, xp.ctypes.data, w.panels.ctypes.data, w.wsum.ctypes.data, b_pad, n,
                              w.wsum.size, threads or kernels.default_threads()):  # fmt: skip
        raise MemoryError("int8_gemm: no memory for the activations")
    return y[:B, :m]


def linear(x: np.ndarray, w: Packed, w_scale: np.ndarray, bias: np.ndarray | None, threads: int) -> np.ndarray | None:
    """A W8A8 layer in C, one call: x (B, n) float32 rounded to int8 per row, times w, back to float32
    (B, m_pad) with w_scale (m_pad,) and bias (m_pad,) or None; None without a compiled kernel."""
    kern = w.kernel
    if kern is None or w.panels is None:
        return None
    x = np.ascontiguousarray(x, dtype=np.float32)
    B, n = x.shape
    b_pad, m_pad = -(-B // kern.rows) * kern.rows, w.wsum.size
    xa, sx = np.empty((b_pad, kern.steps(n) * kern.group), dtype=kern.act), np.empty(b_pad, dtype=np.float32)
    y = np.empty((b_pad, m_pad), dtype=np.float32)
    kern.lib.linear_w8a8(y.ctypes.data, xa.ctypes.data, sx.ctypes.data, x.ctypes.data, w.panels.ctypes.data,
                         w.wsum.ctypes.data, w_scale.ctypes.data, None if bias is None else bias.ctypes.data,
                         B, b_pad, n, m_pad, threads)  # fmt: skip
    return y[:B]


def round_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (B, n) float32 -> (int8 values (B, n), float32 scales (B, 1)): one symmetric scale per row,
    rounded half to even after a division, as the C kernel and w8a8_linear.quantize_tokens do."""
    scale = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    scale = np.where(scale > 0, scale, np.float32(1))  # a row of zeros stays zeros
    return np.clip(np.round(x / scale), -127, 127).astype(np.int8), scale


class Matrix:
    """A W8A8 layer's weights as a float caller multiplies them: q int8 (m, n), one float32 scale per
    row, an optional bias, packed once for the kernel. `x @ matrix` (x float32 (..., n)) gives (..., m):
    each row of x rounded to int8 with its own scale, the exact integer product, scaled back. The NumPy
    runtime multiplies its matrices with `@`, so it runs W8A8 layers unchanged (`__array_ufunc__ = None`
    makes NumPy hand `ndarray @ Matrix` to __rmatmul__)."""

    __array_ufunc__ = None

    def __init__(self, q: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None):
        self.q, self.scale = np.ascontiguousarray(q, dtype=np.int8), np.asarray(scale, dtype=np.float32).reshape(-1)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.packed = pack(self.q)

        def padded(v: np.ndarray) -> np.ndarray:  # the kernel writes whole tiles of outputs
            out = np.zeros(self.packed.wsum.size, dtype=np.float32)
            out[: v.size] = v
            return out

        self._scale, self._bias = padded(self.scale), None if self.bias is None else padded(self.bias)

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape  # type: ignore[return-value]

    def rows(self, *others: Matrix) -> Matrix:
        """This matrix with the rows of `others` appended (e.g. a fused gate/up projection)."""
        mats = (self, *others)
        bias = None if self.bias is None else np.concatenate([o.bias for o in mats])  # type: ignore[misc]
        return Matrix(np.concatenate([o.q for o in mats]), np.concatenate([o.scale for o in mats]), bias)

    def apply(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        m, n = self.shape
        x2 = x.reshape(-1, n)
        y = linear(x2, self.packed, self._scale, self._bias, threads or kernels.default_threads())
        if y is not None:
            return y[:, :m].reshape(*x.shape[:-1], m)
        xq, sx = round_rows(np.asarray(x2, dtype=np.float32))
        y = matmul(xq, self.packed).astype(np.float32) * sx * self.scale
        if self.bias is not None:
            y += self.bias
        return y.reshape(*x.shape[:-1], m)

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x)
