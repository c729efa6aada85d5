"""AdamW and gradient clipping over the model's flat parameter array, as torch computes them.

The flat array holds the decayed tensors (matrices and embeddings) first, so "decay on >= 2-D
weights only" (tinylm.train.optim) is a decay of the slice [:n_decay].
"""

from __future__ import annotations

import math

import numpy as np


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
        p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)   (bias-corrected)"""

    def __init__(self, size: int, n_decay: int, lr: float, betas: tuple[float, float], eps: float = 1e-8,
                 weight_decay: float = 0.0, dtype: type = np.float32):  # fmt: skip
        self.n_decay, self.lr, self.betas, self.eps, self.weight_decay = n_decay, lr, betas, eps, weight_decay
        self.m = np.zeros(size, dtype)
        self.v = np.zeros(size, dtype)
        self.steps = 0
        self._tmp = np.empty(size, dtype)  # scratch: no allocation per step

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        m, v, tmp = self.m, self.v, self._tmp
        self.steps += 1
        p[: self.n_decay] *= 1.0 - self.lr * self.weight_decay
        m *= b1
        m += np.multiply(g, 1.0 - b1, out=tmp)
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(1.0 - b2**self.steps)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1.0 - b1**self.steps)
        p -= tmp
