"""The engine protocol, and the simplest loop over it: one fixed batch, prefill then decode.

An engine keeps a KV cache of rows; a generation owns some of them. `prefill(rows, prompts)` runs each
prompt from position 0 into its row and `decode(rows, tokens)` appends one token to each row, both
returning float32 NumPy logits (len(rows), vocab) for the next token. The torch engine
(`tinylm.generate.engine`) and the NumPy runtime (`tinylm.runtime`) are the two; this module imports
neither, so it runs without torch. The scheduler (`tinylm.generate.scheduler`) drives the same
protocol with requests that come and go.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tinylm.config import ModelConfig
from tinylm.generate.sampling import Sampler


class Engine(Protocol):
    config: ModelConfig

    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> np.ndarray: ...
    def decode(self, rows: Sequence[int], tokens: np.ndarray) -> np.ndarray: ...


@dataclass
class Timing:
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    new_tokens: int = 0  # tokens computed by decode steps (rows riding along after they finished included)
    decode_s: float = 0.0

    def since(self, before: Timing) -> Timing:
        """What was added to these totals after `before` (a copy taken earlier)."""
        return Timing(self.prompt_tokens - before.prompt_tokens, self.prefill_s - before.prefill_s,
                      self.new_tokens - before.new_tokens, self.decode_s - before.decode_s)  # fmt: skip

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s else 0.0


def generate_ids(
    engine: Engine,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampler: Sampler,
    stop_ids: Collection[int] = (),
    done: np.ndarray | None = None,
    timing: Timing | None = None,
) -> Iterator[np.ndarray]:
    """Yield the next token of every row (B,) per step, -1 for rows already finished.

    A row finishes on a token in `stop_ids` (yielded, then -1 after) or when the caller sets
    `done[row]` (e.g. on a stop string); the loop ends when every row is done or after
    `max_new_tokens` steps.
    """
    prompts = [list(p) for p in prompts]
    done = np.zeros(len(prompts), dtype=bool) if done is None else done
    timing = timing if timing is not None else Timing()
    stop = np.array(sorted(stop_ids), dtype=np.int64)
    history = (
        [np.array(p, dtype=np.int64) for p in prompts] if sampler.params.repetition_penalty != 1 else None
    )

    start = time.perf_counter()
    rows = range(len(prompts))
    logits = engine.prefill(rows, prompts)
    timing.prompt_tokens += sum(map(len, prompts))
    tokens = np.zeros(0, dtype=np.int64)
    for step in range(max_new_tokens):
        if step:
            start = time.perf_counter()
            logits = engine.decode(rows, tokens)
        if sampler.params.greedy and history is None:
            tokens = logits.argmax(-1).astype(np.int64)
        else:
            tokens = np.array(
                [sampler.sample(row, b, history[b] if history else ()) for b, row in enumerate(logits)]
            )
        if step:  # the time of the engine and the sampler only, not of whoever consumes the tokens
            timing.decode_s += time.perf_counter() - start
            timing.new_tokens += len(prompts)
        else:
            timing.prefill_s += time.perf_counter() - start
        if history is not None:
            history = [np.append(h, t) for h, t in zip(history, tokens, strict=True)]
        out = np.where(done, -1, tokens)
        done |= np.isin(tokens, stop)
        yield out
        if done.all():
            break
