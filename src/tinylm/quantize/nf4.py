"""nf4: QLoRA's 4-bit NormalFloat (Dettmers et al., 2023) with double quantization, as bitsandbytes.

The 16 code values are quantiles of a standard normal, scaled to [-1, 1], with an exact zero: 8
positive and 7 negative quantiles, so each bin holds an equal share of a normal distribution (the
table below is the paper's, Appendix E; tests rebuild it from the quantiles). Weights are quantized in
blocks of 64 along each row: w ~= absmax(block) * CODE[q], q the code nearest w / absmax.

Double quantization stores the absmax values themselves in 8 bits: their mean is subtracted (one
float32 offset for the matrix), then they are quantized in blocks of 256 with a float32 scale per
block (0.127 bits per weight instead of 0.5). bitsandbytes uses its 8-bit "dynamic" float code for
this second level; we use linear int8 (round(c / s), s = max |c| / 127), whose error is at most half a
step, s / 2, per absmax. Codes are chosen against the double-quantized absmax the dequantizer uses.
"""

from __future__ import annotations

import numpy as np

from tinylm.quantize.blocks import Form, groups, pack_nibbles, round_away

BITS = 4
GROUP = 64
PARTS = ("qweight", "absmax_q", "absmax_scale", "absmax_offset")  # the arrays a checkpoint stores per matrix
ABSMAX_BLOCK = 256
CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=np.float32)  # fmt: skip
MIDPOINTS = (CODE[1:] + CODE[:-1]) / 2  # a normalized weight takes the code of the bin it falls into


def quantize_absmax(absmax: np.ndarray) -> dict[str, np.ndarray]:
    """Second-level quantization of the flat float32 absmax values (see the module docstring)."""
    offset = np.float32(absmax.mean()) if absmax.size else np.float32(0)
    c = absmax.astype(np.float32) - offset
    pad = -c.size % ABSMAX_BLOCK
    blocks = np.concatenate([c, np.zeros(pad, np.float32)]).reshape(-1, ABSMAX_BLOCK)
    scale = np.abs(blocks).max(axis=1) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale[:, None] > 0, round_away(blocks / scale[:, None]), 0).astype(np.int8)
    return {"absmax_q": q.ravel()[: c.size], "absmax_scale": scale.astype(np.float32),
            "absmax_offset": np.array([offset], np.float32)}  # fmt: skip


def dequantize_absmax(parts: dict[str, np.ndarray]) -> np.ndarray:
    q = parts["absmax_q"].astype(np.float32)
    scale = np.repeat(parts["absmax_scale"], ABSMAX_BLOCK)[: q.size]
    return q * scale + parts["absmax_offset"][0]


def quantize(w: np.ndarray, group: int = GROUP) -> dict[str, np.ndarray]:
    g = groups(w, group)  # (out, blocks, group)
    parts = quantize_absmax(np.abs(g).max(axis=-1).ravel())
    absmax = dequantize_absmax(parts).reshape(g.shape[:2])
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.where(absmax[..., None] > 0, g / absmax[..., None], 0)
    q = np.searchsorted(MIDPOINTS, normalized).astype(np.uint8)
    parts["absmax_q"] = parts["absmax_q"].reshape(g.shape[:2])
    return {"qweight": pack_nibbles(q.reshape(w.shape)), **parts}


def layout(shape: tuple[int, int], group: int = GROUP) -> dict[str, tuple[tuple[int, ...], str]]:
    blocks = shape[0] * (shape[1] // group)
    return {"qweight": ((shape[0], shape[1] // 2), "uint8"), "absmax_q": ((shape[0], shape[1] // group), "int8"),
            "absmax_scale": ((-(-blocks // ABSMAX_BLOCK),), "float32"), "absmax_offset": ((1,), "float32")}  # fmt: skip


def form(parts: dict[str, np.ndarray], group: int = GROUP) -> Form:
    absmax = dequantize_absmax({**parts, "absmax_q": parts["absmax_q"].ravel()})
    return Form(4, group, parts["qweight"], absmax.reshape(parts["absmax_q"].shape), lut=CODE)
