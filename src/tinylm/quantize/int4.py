"""int4: asymmetric 4-bit groups along each row (group size 32, 64 or 128; default 128), as gpt-fast
and torchao quantize weights: a float16 scale and minimum per group,

    scale = (max - min) / 15,   q = clamp(round((w - min) / scale), 0, 15),   w ~= q * scale + min

q is computed from the float16-rounded scale and minimum, the ones dequantization uses. A constant
group gets scale 0 and reproduces its value through `min` (up to float16 rounding).
"""

from __future__ import annotations

import numpy as np

from tinylm.quantize.blocks import LINEAR, Form, groups, pack_nibbles, round_away

BITS = 4
GROUP = 128
PARTS = ("qweight", "scales", "mins")  # the arrays a checkpoint stores per matrix


def quantize(w: np.ndarray, group: int = GROUP) -> dict[str, np.ndarray]:
    g = groups(w, group)
    lo, hi = g.min(axis=-1), g.max(axis=-1)
    scale = ((hi - lo) / np.float32(15)).astype(np.float16)
    mins = lo.astype(np.float16)
    s, m = scale.astype(np.float32)[..., None], mins.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, round_away((g - m) / s), 0).clip(0, 15).astype(np.uint8)
    return {"qweight": pack_nibbles(q.reshape(w.shape)), "scales": scale, "mins": mins}


def layout(shape: tuple[int, int], group: int = GROUP) -> dict[str, tuple[tuple[int, ...], str]]:
    per_group = ((shape[0], shape[1] // group), "float16")
    return {"qweight": ((shape[0], shape[1] // 2), "uint8"), "scales": per_group, "mins": per_group}


def form(parts: dict[str, np.ndarray], group: int = GROUP) -> Form:
    return Form(4, group, parts["qweight"], parts["scales"].astype(np.float32),
                parts["mins"].astype(np.float32), LINEAR)  # fmt: skip
