"""int8: symmetric, one float32 scale per output channel (row), weight-only.

    scale[o] = max_i |w[o, i]| / 127,   q[o, i] = round(w[o, i] / scale[o])   (round half away from zero)

A row of zeros gets scale 0 and q = 0. The maximum error is half a step, scale[o] / 2.
"""

from __future__ import annotations

import numpy as np

from tinylm.quantize import q8_0
from tinylm.quantize.blocks import Form

BITS = 8
GROUP = 0  # no groups: the whole row shares a scale
PARTS = ("qweight", "scales")  # the arrays a checkpoint stores per matrix


def quantize(w: np.ndarray, group: int) -> dict[str, np.ndarray]:
    q, scale = q8_0.symmetric_groups(w, w.shape[1])
    return {"qweight": q, "scales": scale[:, 0]}


def layout(shape: tuple[int, int], group: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return {"qweight": (shape, "int8"), "scales": ((shape[0],), "float32")}


def form(parts: dict[str, np.ndarray], group: int) -> Form:
    q = parts["qweight"]
    return Form(8, q.shape[1], q, parts["scales"].astype(np.float32).reshape(-1, 1))
