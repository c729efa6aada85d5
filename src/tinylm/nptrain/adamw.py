"""AdamW and gradient clipping over the model's flat parameter array, as torch computes them.

The flat array holds the decayed tensors (matrices and embeddings) first, so "decay on >= 2-D
weights only" (tinylm.train.optim) is a decay of the slice [:n_decay].
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

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
                 weight_decay: float = 0.0, dtype: type = np.float32, threads: int = 1):  # fmt: skip
        self.n_decay, self.lr, self.betas, self.eps, self.weight_decay = n_decay, lr, betas, eps, weight_decay
        self.m = np.zeros(size, dtype)
        self.v = np.zeros(size, dtype)
        self.steps = 0
        self._tmp = np.empty((threads, min(size, BLOCK_ELEMENTS)), dtype)  # scratch: a block per thread
        # threads > 1: each thread updates its share of the blocks (the update is the same number
        # whoever computes it, so the result does not depend on the thread count)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="adamw") if threads > 1 else None

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        self.steps += 1
        c2 = math.sqrt(1.0 - b2**self.steps)
        size, eps = self.lr * c2 / (1.0 - b1**self.steps), self.eps * c2

        def update(blocks: list[slice], tmp: np.ndarray) -> None:
            for r in blocks:
                pr, gr, m, v, t = p[r], g[r], self.m[r], self.v[r], tmp[: p[r].size]
                pr[: max(0, self.n_decay - r.start)] *= 1.0 - self.lr * self.weight_decay
                m *= b1
                m += np.multiply(gr, 1.0 - b1, out=t)
                v *= b2
                np.multiply(gr, 1.0 - b2, out=t)
                t *= gr
                v += t
                np.sqrt(v, out=t)
                t += eps
                np.divide(m, t, out=t)
                t *= size
                pr -= t

        blocks = row_blocks(p)
        if self.pool is None:
            update(blocks, self._tmp[0])
        else:
            shares = [blocks[i :: len(self._tmp)] for i in range(len(self._tmp))]
            list(self.pool.map(update, shares, self._tmp))
