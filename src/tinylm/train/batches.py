"""Training examples and the order they are drawn in.

A dataset here is anything with `len()` (how many examples) and `get(rows) -> (x, y)` for a 1-D tensor
of example indices: `TokenWindows` (every window of context+1 tokens in a long token sequence, as
nanoGPT samples), `Examples` (fixed rows with targets, -1 where the loss ignores a position) or
`Strided` (every n-th example of another dataset). A training dataset may yield more tensors per example
after (x, y); the trainer hands them to the objective.

`Sampler` draws the example indices of each optimizer step (tinylm.train.order: torch.Generator's draws,
one definition for both trainers), so the data order is a part of the resumable state. `Batches` hands
the trainer each step's tensors, gathered ahead in a background thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from tinylm.train import order
from tinylm.train.windows import Windows


class Dataset(Protocol):
    def __len__(self) -> int: ...

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TokenWindows(Windows):
    """Windows of `context` input tokens (and the next token of each as target) from one token sequence:
    a numpy array (or memmap) or all shards of a split (tinylm.train.windows), as torch tensors."""

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, y = super().get(rows.numpy())
        return torch.from_numpy(x), torch.from_numpy(y)


class Examples:
    """Fixed examples: inputs x (N, T) and targets y (N, T), -1 where a position is not scored."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    @property
    def num_tokens(self) -> int:
        return self.x.numel()

    def __len__(self) -> int:
        return len(self.x)

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[rows], self.y[rows]


class Strided:
    """Every `stride`-th example of a dataset. With stride = context over `TokenWindows`: the windows that
    tile the token stream without overlap, so per-example data (a teacher's cached outputs) costs one
    entry per token rather than one per token and window."""

    def __init__(self, data: Dataset, stride: int):
        self.data, self.stride = data, stride

    @property
    def num_tokens(self) -> int:
        return getattr(self.data, "num_tokens", len(self.data))

    def __len__(self) -> int:
        return (len(self.data) + self.stride - 1) // self.stride

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.data.get(rows * self.stride)


class Sampler(order.Sampler):
    """tinylm.train.order's example indices, as torch tensors."""

    def step(self) -> list[torch.Tensor]:  # type: ignore[override]
        return [torch.from_numpy(rows) for rows in super().step()]


class Batches:
    """Each optimizer step's micro-batches (tuples of tensors on `device`), in the sampler's order. With
    `ahead`, a background thread draws and gathers the next step's while the current one computes (NumPy
    indexing and copies release the GIL). `get_state()` is the sampler's state before the step drawn
    ahead, so a checkpoint taken between steps resumes with the step after the last one trained."""

    def __init__(self, sampler: Sampler, data: Dataset, device: torch.device, ahead: bool = True):
        self.sampler, self.data, self.device = sampler, data, device
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batches") if ahead else None
        self._next: Future | None = None
        self._state = sampler.get_state()

    def step(self) -> list[tuple[torch.Tensor, ...]]:
        micro = self._next.result() if self._next is not None else self._gather()
        self._state = self.sampler.get_state()
        if self._pool is not None:
            self._next = self._pool.submit(self._gather)
        return micro

    def _gather(self) -> list[tuple[torch.Tensor, ...]]:
        return [tuple(t.to(self.device, non_blocking=True) for t in self.data.get(rows)) for rows in self.sampler.step()]

    def get_state(self) -> np.ndarray:
        return self._state

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def eval_rows(size: int, batch_size: int, batches: int) -> list[torch.Tensor]:
    """The same evenly spread validation examples every time (no randomness involved)."""
    rows = torch.linspace(0, size - 1, batches * batch_size).round().long()
    return list(rows.split(batch_size))
