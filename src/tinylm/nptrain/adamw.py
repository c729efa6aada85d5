"""AdamW and gradient clipping over the model's flat parameter array, as torch computes them.

The flat array holds the decayed tensors (matrices and embeddings) first, so "decay on >= 2-D
weights only" (tinylm.train.optim) is a decay of the slice [:n_decay].
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.nptrain.ops import BLOCK_ELEMENTS, row_blocks


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale the gradient to a global L2 norm of at most `max_norm` (0: no limit); returns the norm
    before clipping. Like torch.nn.utils.clip_grad_norm_, the scale is max_norm / (norm + 1e-6)."""
    norm = math.sqrt(float(np.dot(grad, grad)))
    if max_norm and math.isfinite(norm):
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            grad *= coef
    return norm


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), one step over all parameters:
        p <- p (1 - lr wd)                                     (decayed slice only)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2     (running moments)
        p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)   (bias-corrected)
    The last line is computed as p - s * m / (sqrt(v) + eps'), with s = lr sqrt(1 - b2^t) / (1 - b1^t)
    and eps' = eps sqrt(1 - b2^t): the same number, two passes fewer. All of it runs block by block
    (ops.row_blocks): the dozen passes over four parameter-sized arrays then hit the cache."""

    def __init__(self, size: int, n_decay: int, lr: float, betas: tuple[float, float], eps: float = 1e-8,
                 weight_decay: float = 0.0, dtype: type = np.float32):  # fmt: skip
        self.n_decay, self.lr, self.betas, self.eps, self.weight_decay = n_decay, lr, betas, eps, weight_decay
        self.m = np.zeros(size, dtype)
        self.v = np.zeros(size, dtype)
        self.steps = 0
        self._tmp = np.empty(min(size, BLOCK_ELEMENTS), dtype)  # scratch for one block

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        self.steps += 1
        c2 = math.sqrt(1.0 - b2**self.steps)
        size, eps = self.lr * c2 / (1.0 - b1**self.steps), self.eps * c2
        for r in row_blocks(p):
            pr, gr, m, v, tmp = p[r], g[r], self.m[r], self.v[r], self._tmp[: p[r].size]
            pr[: max(0, self.n_decay - r.start)] *= 1.0 - self.lr * self.weight_decay
            m *= b1
            m += np.multiply(gr, 1.0 - b1, out=tmp)
            v *= b2
            np.multiply(gr, 1.0 - b2, out=tmp)
            tmp *= gr
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= size
            pr -= tmp
