"""Training examples from one long token sequence, with NumPy alone: the core of
tinylm.train.batches.TokenWindows (torch) and the NumPy trainer's dataset."""

from __future__ import annotations

import numpy as np

from tinylm.data.shards import TokenShards
from tinylm.errors import TinyLMError


class Windows:
    """Windows of `context` input tokens (and the next token of each as target) from one token sequence:
    a numpy array (or memmap) or all shards of a split."""

    def __init__(self, tokens: np.ndarray | TokenShards, context: int, name: str = "data"):
        if isinstance(tokens, TokenShards) and len(tokens.arrays) == 1:
            tokens = tokens.arrays[0]  # one memmap: windows by fancy indexing, no per-window copies
        self.tokens, self.context = tokens, context
        if len(tokens) <= context:
            raise TinyLMError(
                f"{name} has {len(tokens):,} tokens, not more than the context of {context}; "
                "use a shorter --context or more data"
            )
        self._offsets = np.arange(context + 1)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens) - self.context

    def get(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.tokens, TokenShards):
            w = self.tokens.batch(rows, self.context + 1)
        else:
            w = self.tokens[rows[:, None] + self._offsets].astype(np.int64)  # (N, T + 1)
        return w[:, :-1], w[:, 1:]
