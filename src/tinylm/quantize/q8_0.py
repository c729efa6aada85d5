"""q8_0: symmetric int8 in groups of 32 with a float16 scale per group, exactly GGUF's Q8_0.

    d = max |w| / 127 (float32),   q = round(w * (1 / d)),   stored: fp16(d) and q

llama.cpp rounds half away from zero and multiplies by the reciprocal, so we do too: our (q, d) are
byte-identical to `gguf.quants.quantize(w, Q8_0)` (`to_gguf` interleaves them into its 34-byte blocks).
llama2.c's v2 files use the same math with float32 scales and groups of 64 (`symmetric_groups`).
"""

from __future__ import annotations

import numpy as np

from tinylm.quantize.blocks import Form, groups, round_away

BITS = 8
GROUP = 32
PARTS = ("qweight", "scales")  # the arrays a checkpoint stores per matrix


def symmetric_groups(w: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 q (out, in) and float32 scales (out, in / group) with w ~= q * scale; an all-zero group
    gets scale 0 and q = 0."""
    g = groups(w, group)
    d = np.abs(g).max(axis=-1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = round_away(g * inverse[..., None])
    return q.astype(np.int8).reshape(w.shape), d.astype(np.float32)


def quantize(w: np.ndarray, group: int = GROUP) -> dict[str, np.ndarray]:
    q, d = symmetric_groups(w, group)
    return {"qweight": q, "scales": d.astype(np.float16)}


def layout(shape: tuple[int, int], group: int = GROUP) -> dict[str, tuple[tuple[int, ...], str]]:
    return {"qweight": (shape, "int8"), "scales": ((shape[0], shape[1] // group), "float16")}


def form(parts: dict[str, np.ndarray], group: int = GROUP) -> Form:
    return Form(8, group, parts["qweight"], parts["scales"].astype(np.float32))


def to_gguf(parts: dict[str, np.ndarray]) -> np.ndarray:
    """GGUF Q8_0 blocks (out, in / 32 * 34) bytes: per block the fp16 scale, then 32 int8 values."""
    q, d = parts["qweight"], parts["scales"]
    out = q.shape[0]
    return np.concatenate(
        [d.astype("<f2").view(np.uint8).reshape(out, -1, 2), q.view(np.uint8).reshape(out, -1, GROUP)], axis=2
    ).reshape(out, -1)


def from_gguf(blocks: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    b = np.asarray(blocks, dtype=np.uint8).reshape(shape[0], -1, 2 + GROUP)
    d = np.ascontiguousarray(b[:, :, :2]).view("<f2").reshape(shape[0], -1).astype(np.float16)
    return {"qweight": np.ascontiguousarray(b[:, :, 2:]).view(np.int8).reshape(shape), "scales": d}
