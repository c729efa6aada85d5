"""Training objectives: what the trainer minimises, given the model and a batch.

An objective is called as `objective(model, x, y)` and returns a scalar loss tensor; `model` is
whatever the trainer runs (the Model itself, compiled, or wrapped in DDP), so an objective only
calls it and never reaches into it. Next-token cross-entropy is the default.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (B, T, vocab) over the positions whose target (B, T) is
    not -1, computed in float32 whatever the autocast dtype (bf16 log-softmax loses ~2 digits)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def next_token(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain language modelling: predict y[t] from x[..t]."""
    return cross_entropy(model(x), y)
