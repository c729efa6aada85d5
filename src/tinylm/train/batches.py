"""Training examples and the order they are drawn in.

A dataset here is anything with `len()` (how many examples) and `get(rows) -> (x, y)` for a 1-D tensor
of example indices: `TokenWindows` (every window of context+1 tokens in a long token sequence, as
nanoGPT samples), `Examples` (fixed rows with targets, -1 where the loss ignores a position) or
`Strided` (every n-th example of another dataset). A training dataset may yield more tensors per example
after (x, y); the trainer hands them to the objective.

`Sampler` draws the example indices of each optimizer step from an explicit torch.Generator, so the
data order is a part of the resumable state. Every process draws the same indices for the whole global
batch and takes its own slice: 2 processes x batch B see exactly what 1 process x batch 2B sees, and so
does 1 process x B with 2 steps of gradient accumulation.
"""

from __future__ import annotations

from typing import Protocol

import torch

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


class Sampler:
    """Uniformly random example indices (with replacement) for each optimizer step."""

    def __init__(self, size: int, batch_size: int, accum: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.size, self.batch_size, self.accum, self.rank, self.world = size, batch_size, accum, rank, world
        self.generator = torch.Generator().manual_seed(seed)

    def step(self) -> list[torch.Tensor]:
        """This process's rows for each micro-batch of the next optimizer step."""
        B, W = self.batch_size, self.world
        rows = torch.randint(self.size, (self.accum * W * B,), generator=self.generator)
        return [rows[(m * W + self.rank) * B : (m * W + self.rank + 1) * B] for m in range(self.accum)]


def eval_rows(size: int, batch_size: int, batches: int) -> list[torch.Tensor]:
    """The same evenly spread validation examples every time (no randomness involved)."""
    rows = torch.linspace(0, size - 1, batches * batch_size).round().long()
    return list(rows.split(batch_size))
