"""Training objectives: what the trainer minimises, given the model and a batch.

An objective is called as `objective(model, x, y, *extra)` and returns a scalar loss tensor; `model` is
whatever the trainer runs (the Model itself, compiled, or wrapped in DDP), so an objective only
calls it and never reaches into it. `extra` are any further tensors the training dataset yields per
example beyond (x, y) (e.g. a cached teacher's outputs, see `tinylm.distill`). Next-token
cross-entropy is the default.

The distillation pieces (divergences between two next-token distributions, and the combined loss)
live here too: they are plain functions of logits, whichever teacher produced them.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.head_loss import cross_entropy as cross_entropy  # re-exported: the objectives build on it

DIVERGENCES = ("forward", "reverse", "jsd")


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 *extra: torch.Tensor) -> torch.Tensor: ...  # fmt: skip


def next_token(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain language modelling: predict y[t] from x[..t]. The model computes the loss itself (given targets),
    so that it can fuse the cross-entropy with its output head (tinylm.head_loss)."""
    return model(x, targets=y)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) per position, from log-probabilities (..., V) -> (...)."""
    return (p.exp() * (p - q)).sum(-1)


def divergence(kind: str, teacher: torch.Tensor, student: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """D(teacher, student) per position, from log-probabilities (..., V) -> (...):
    forward  KL(teacher || student): mean-seeking, the student spreads over everything the teacher allows;
    reverse  KL(student || teacher): mode-seeking, the student may drop what it cannot model;
    jsd      generalized Jensen-Shannon, beta KL(teacher || M) + (1 - beta) KL(student || M) with the mixture
             M = beta teacher + (1 - beta) student: bounded (by the entropy of beta), symmetric at beta = 0.5."""
    if kind == "forward":
        return kl(teacher, student)
    if kind == "reverse":
        return kl(student, teacher)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise TinyLMError(f"the JSD mixture weight beta must be in (0, 1), got {beta}")
        m = torch.logaddexp(teacher + math.log(beta), student + math.log1p(-beta))
        return beta * kl(teacher, m) + (1 - beta) * kl(student, m)
    raise TinyLMError(f"unknown divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")


def distill_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                 temperature: float, kind: str = "forward", beta: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Mean D(teacher_T, student_T) over the scored positions (targets != -1), both softened by the
    temperature T. Logits (B, T, V) over the same vocabulary; computed in float32."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    d = divergence(kind, t, s, beta)  # (B, T)
    scored = targets != -1
    return torch.where(scored, d, 0.0).sum() / scored.sum().clamp(min=1)


def distillation_loss(ce: torch.Tensor, kd: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """(1 - alpha) CE + alpha T^2 D. The T^2 keeps the soft term's gradient about the same size at any
    temperature: softening by T scales the gradient of D with respect to the logits by about 1/T^2
    (Hinton et al. 2015), so alpha means the same share of the gradient whatever T is."""
    return (1 - alpha) * ce + alpha * temperature**2 * kd
