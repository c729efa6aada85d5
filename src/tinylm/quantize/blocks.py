"""What every scheme shares (NumPy only, no torch: the runtime imports it): rounding as llama.cpp
rounds, 4-bit packing in GGUF's order, and `Form`, the one unpacked description of a quantized matrix
that the kernels multiply with and `dequantize` expands.

Every scheme stores a matrix W (out, in) row by row, in groups along `in`, so a row's numbers never
depend on another row: rows can be concatenated (fused projections) and multiplied independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tinylm.errors import TinyLMError

PACK_BLOCK = 32  # 4-bit values are packed per 32: byte j holds element j (low nibble) and j + 16 (high)
LINEAR = np.arange(16, dtype=np.float32)  # the 4-bit table of a nibble that stands for itself


def round_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's roundf, which llama.cpp uses; NumPy's round goes to even).
    floor(|x| + 0.5) would be wrong for |x| just below 0.5, where the sum rounds up to 1."""
    a = np.abs(x)
    whole = np.floor(a)
    return np.sign(x) * (whole + (a - whole >= 0.5))


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 values 0..15, (out, in) -> (out, in / 2) bytes in GGUF's Q4_0 order per block of 32."""
    blocks = q.astype(np.uint8).reshape(q.shape[0], -1, 2, PACK_BLOCK // 2)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << np.uint8(4))).reshape(q.shape[0], -1)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """The inverse of pack_nibbles: (out, in / 2) bytes -> (out, in) uint8 values 0..15."""
    b = packed.reshape(packed.shape[0], -1, 1, PACK_BLOCK // 2)
    return np.concatenate([b & np.uint8(15), b >> np.uint8(4)], axis=2).reshape(packed.shape[0], -1)


def groups(w: np.ndarray, group: int) -> np.ndarray:
    """(out, in) float32 -> (out, in / group, group)."""
    return np.asarray(w, dtype=np.float32).reshape(w.shape[0], -1, group)


def group_for(name: str, in_features: int, group: int, smallest: int = PACK_BLOCK) -> int:
    """The group size a matrix with rows of `in_features` gets: `group`, halved while it does not divide
    the row (288-wide stories15M rows take 32 where 64 or 128 was asked); an error naming the tensor
    when not even `smallest` divides it."""
    g = group
    while in_features % g and g > smallest:
        g //= 2
    if in_features % g:
        raise TinyLMError(
            f"tensor {name}: rows of {in_features} values are not a multiple of {smallest}, which this "
            "scheme needs; keep it in float with --keep, or choose int8"
        )
    return g


@dataclass
class Form:
    """A quantized matrix (out, in) as the kernels read it: w[o, i] = scale[o, i // group] * (v + offset) + mins,
    where v = q[o, i] for 8-bit forms (q int8 (out, in)) and v = lut[nibble] for 4-bit ones
    (q packed by pack_nibbles (out, in / 2), lut 16 float32 values); `mins` (out, in // group) or None;
    `offset` one number for the whole matrix (q4_0's -8), which costs no bytes to read."""

    bits: int
    group: int
    q: np.ndarray
    scale: np.ndarray  # float32 (out, in // group)
    mins: np.ndarray | None = None
    lut: np.ndarray | None = None
    offset: float = 0.0

    @cached_property
    def addresses(self) -> tuple[int | None, ...]:
        """Where q, scale, mins and a table other than LINEAR start in memory (None: absent), for the C
        kernels, worked out once: ndarray.ctypes costs a microsecond or more, and a decode step calls ~50 times."""
        lut = None if self.lut is LINEAR else self.lut
        return tuple(None if a is None else a.ctypes.data for a in (self.q, self.scale, self.mins, lut))

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1] * (8 // self.bits)

    def values(self) -> np.ndarray:
        """The unscaled values v as float32 (out, in)."""
        if self.bits == 8:
            return self.q.astype(np.float32)
        return self.lut[unpack_nibbles(self.q)]  # type: ignore[index]

    def dequantize(self) -> np.ndarray:
        """The float32 matrix (out, in) these numbers stand for."""
        out, n = self.shape
        w = (self.values() + np.float32(self.offset)).reshape(out, -1, self.group) * self.scale[:, :, None]
        if self.mins is not None:
            w += self.mins[:, :, None]
        return w.reshape(out, n)

    def rows(self, *others: Form) -> Form:
        """This matrix with the rows of `others` appended (e.g. a fused gate/up projection)."""
        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(f, name) for f in (self, *others)]
            return None if parts[0] is None else np.ascontiguousarray(np.concatenate(parts))

        return Form(self.bits, self.group, cat("q"), cat("scale"), cat("mins"), self.lut, self.offset)  # type: ignore[arg-type]
