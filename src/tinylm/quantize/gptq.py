"""GPTQ (Frantar et al., 2022): round a Linear layer's weights to a 4-bit grid one column at a time,
pushing each column's rounding error onto the columns not yet rounded, weighted by the inverse
Hessian H = X^T X of the layer's calibration inputs X, so that the layer's *outputs* X W^T move as
little as possible (not the weights themselves, which is what round-to-nearest minimizes).

For W (out, in) and H (in, in), with U the upper Cholesky factor of H^-1:

    for each column j:  q_j = grid(w_j);  e_j = (w_j - q_j) / U[j, j];  w_k -= e_j * U[j, k]  for k > j

done in blocks of BLOCK columns, the updates to later blocks applied at once (one matrix product).
Grids (see `Grid`) are exactly those of q4_0 and int4, and the result is stored as they store it, so
a GPTQ layer is a plain QuantLinear: same kernels, same GGUF Q4_0 export. A group's scale (and
minimum) is fitted when its first column comes up, from the weights as updated so far; with
act-order (columns in order of decreasing H[j, j]) the groups are fitted up front from the original
weights instead, since the stored format has one scale per run of consecutive columns.

With H = I (uncorrelated inputs) the updates vanish and GPTQ is exactly round-to-nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinylm.quantize.blocks import pack_nibbles, round_away

BLOCK = 128
DAMP = 0.01  # of the mean of H's diagonal, added to the diagonal
MAX_DAMP_TRIES = 6  # each retry multiplies the damping by 10


class Q4_0Grid:
    """GGUF Q4_0 (see q4_0.py): d = signed max / -8 per group, q = min(15, trunc(w / d + 8.5))."""

    scheme = "q4_0"

    @staticmethod
    def fit(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(out, group) weights -> (inverse of d, d rounded to float16 and back) per row."""
        d = np.take_along_axis(g, np.abs(g).argmax(axis=1)[:, None], axis=1)[:, 0] / np.float32(-8)
        with np.errstate(divide="ignore"):
            inverse = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
        return inverse, d.astype(np.float16).astype(np.float32)

    @staticmethod
    def codes(w: np.ndarray, p: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.trunc(w * p[0] + np.float32(8.5)).clip(0, 15).astype(np.uint8)

    @staticmethod
    def values(q: np.ndarray, p: tuple[np.ndarray, ...]) -> np.ndarray:
        return p[1] * (q.astype(np.float32) - np.float32(8))

    @staticmethod
    def parts(q: np.ndarray, params: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
        return {"qweight": pack_nibbles(q), "scales": np.stack([p[1] for p in params], 1).astype(np.float16)}


class Int4Grid:
    """int4 (see int4.py): asymmetric, scale = (max - min) / 15 and min per group, both float16."""

    scheme = "int4"

    @staticmethod
    def fit(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = g.min(axis=1), g.max(axis=1)
        scale = ((hi - lo) / np.float32(15)).astype(np.float16).astype(np.float32)
        return scale, lo.astype(np.float16).astype(np.float32)

    @staticmethod
    def codes(w: np.ndarray, p: tuple[np.ndarray, ...]) -> np.ndarray:
        s, m = p
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > 0, round_away((w - m) / s), 0).clip(0, 15).astype(np.uint8)

    @staticmethod
    def values(q: np.ndarray, p: tuple[np.ndarray, ...]) -> np.ndarray:
        return q.astype(np.float32) * p[0] + p[1]

    @staticmethod
    def parts(q: np.ndarray, params: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
        stack = [np.stack([p[i] for p in params], 1).astype(np.float16) for i in (0, 1)]
        return {"qweight": pack_nibbles(q), "scales": stack[0], "mins": stack[1]}


GRIDS = {"q4_0": Q4_0Grid, "int4": Int4Grid}


@dataclass
class GPTQResult:
    parts: dict[str, np.ndarray]  # as the scheme stores them
    damp: float  # the damping that made H positive definite (relative to its mean diagonal)
    tries: int  # 1 when the first damping was enough


def inverse_cholesky(h: np.ndarray, damp: float) -> tuple[np.ndarray, float, int]:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, in float64 (torch's LAPACK: NumPy's
    measured ~10x slower here). A Hessian that is not positive definite (too few samples, collinear
    inputs) is retried with ten times the damping."""
    import torch

    h = torch.tensor(h, dtype=torch.float64)
    dead = torch.diag(h) == 0  # inputs never seen: nothing to preserve, any value will do
    h[dead, dead] = 1.0
    mean = float(torch.diag(h).mean())
    eye = torch.eye(len(h), dtype=torch.float64)
    for tries in range(1, MAX_DAMP_TRIES + 1):
        lower, info = torch.linalg.cholesky_ex(h + damp * mean * eye)
        if info == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if info == 0:
                return upper.numpy(), damp, tries
        damp *= 10
    from tinylm.errors import TinyLMError

    raise TinyLMError(f"the calibration Hessian stays singular even with damping {damp / 10:g}; "
                      "give more (or more varied) calibration text")  # fmt: skip


def gptq(w: np.ndarray, h: np.ndarray, scheme: str, group: int, damp: float = DAMP,
         act_order: bool = False) -> GPTQResult:  # fmt: skip
    """Quantize w (out, in) with the calibration Hessian h (in, in) to `scheme`'s grid in groups of `group`."""
    grid = GRIDS[scheme]
    w = np.array(w, dtype=np.float32)
    out, n = w.shape
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(n)
    u, damp, tries = inverse_cholesky(np.asarray(h)[np.ix_(order, order)], damp)
    u = u.astype(np.float32)
    static = [grid.fit(w[:, g : g + group]) for g in range(0, n, group)] if act_order else None
    params: list[tuple[np.ndarray, ...]] = static or []
    w = w[:, order]
    q = np.zeros((out, n), dtype=np.uint8)
    block = group * -(-BLOCK // group)  # a multiple of the group, so a group never straddles two blocks
    for b0 in range(0, n, block):
        b1 = min(b0 + block, n)
        errors = np.zeros((out, b1 - b0), dtype=np.float32)
        for j in range(b0, b1):
            col = order[j]
            if static is None and j % group == 0:
                params.append(grid.fit(w[:, j : j + group]))
            p = params[col // group]
            q[:, col] = grid.codes(w[:, j], p)
            err = (w[:, j] - grid.values(q[:, col], p)) / u[j, j]
            w[:, j + 1 : b1] -= np.outer(err, u[j, j + 1 : b1])
            errors[:, j - b0] = err
        w[:, b1:] -= errors @ u[b0:b1, b1:]
    return GPTQResult(grid.parts(q, params), damp, tries)
