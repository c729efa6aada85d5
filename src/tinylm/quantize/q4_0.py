"""q4_0: symmetric 4-bit in groups of 32 with a float16 scale per group, exactly GGUF's Q4_0.

    m = the value of largest magnitude, with its sign;  d = m / -8;  q = min(15, trunc(w / d + 8.5))
    w ~= d * (q - 8)

Dividing by -8 (not 7) maps the largest value to q = 0 exactly, using the asymmetric end of the 4-bit
range for the larger side. Packed two values a byte in GGUF's order (byte j: element j low nibble,
element j + 16 high), byte-identical to `gguf.quants.quantize(w, Q4_0)` (see `to_gguf`).
"""

from __future__ import annotations

import numpy as np

from tinylm.quantize.blocks import LINEAR, Form, groups, pack_nibbles

BITS = 4
GROUP = 32
PARTS = ("qweight", "scales")  # the arrays a checkpoint stores per matrix


def quantize(w: np.ndarray, group: int = GROUP) -> dict[str, np.ndarray]:
    g = groups(w, group)
    biggest = np.take_along_axis(g, np.abs(g).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    d = biggest / np.float32(-8)
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.trunc(g * inverse[..., None] + np.float32(8.5)).clip(0, 15).astype(np.uint8)
    return {"qweight": pack_nibbles(q.reshape(w.shape)), "scales": d.astype(np.float16)}


def layout(shape: tuple[int, int], group: int = GROUP) -> dict[str, tuple[tuple[int, ...], str]]:
    return {"qweight": ((shape[0], shape[1] // 2), "uint8"), "scales": ((shape[0], shape[1] // group), "float16")}


def form(parts: dict[str, np.ndarray], group: int = GROUP) -> Form:
    """d * (q - 8) with q - 8 as an offset: the kernels convert q instead of looking it up, and add
    -8 d times the sum of each group's activations (no second array to read, as mins would be)."""
    return Form(4, group, parts["qweight"], parts["scales"].astype(np.float32), None, LINEAR, -8.0)


def to_gguf(parts: dict[str, np.ndarray]) -> np.ndarray:
    """GGUF Q4_0 blocks (out, in / 32 * 18) bytes: per block the fp16 scale, then 16 packed bytes."""
    qs, d = parts["qweight"], parts["scales"]
    out = qs.shape[0]
    return np.concatenate(
        [d.astype("<f2").view(np.uint8).reshape(out, -1, 2), qs.reshape(out, -1, GROUP // 2)], axis=2
    ).reshape(out, -1)


def from_gguf(blocks: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    b = np.asarray(blocks, dtype=np.uint8).reshape(shape[0], -1, 2 + GROUP // 2)
    d = np.ascontiguousarray(b[:, :, :2]).view("<f2").reshape(shape[0], -1).astype(np.float16)
    return {"qweight": np.ascontiguousarray(b[:, :, 2:]).reshape(shape[0], -1), "scales": d}
