"""Choosing the next token from a row of logits, in NumPy so both engines share one rule.

Order: repetition penalty → temperature → softmax → top-k → top-p → min-p → draw. Temperature 0 is
greedy (argmax, ties to the lowest id). Each filter only removes tokens and always keeps the most
likely one; the draw renormalises what is left. Every row of a batch draws from its own random
stream derived from (seed, row), so a seeded generation repeats exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest most-likely set whose probability reaches p
    min_p: float | None = None  # keep tokens at least min_p times as likely as the most likely one
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or output (CTRL's rule)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise TinyLMError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise TinyLMError(f"top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise TinyLMError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise TinyLMError(f"min-p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise TinyLMError(f"repetition penalty must be > 0 (1 is off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(
    logits: np.ndarray, seen: Sequence[int] | np.ndarray, penalty: float
) -> np.ndarray:
    """A copy of `logits` where every token in `seen` is made less likely: positive logits are
    divided by `penalty`, negative ones multiplied (so the penalty never makes a token likelier)."""
    out = np.array(logits, dtype=np.float32)
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    if ids.size:
        picked = out[ids]
        out[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    np.exp(z, out=z)
    return z / z.sum()


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    return z - np.log(np.exp(z).sum())


def top_ids(probs: np.ndarray, m: int) -> np.ndarray:
    """Ids of the m most likely tokens, most likely first; equal probabilities in order of id.
    A partition finds the m-th largest value first, so only the candidates are sorted."""
    n = probs.size
    if m < n:
        threshold = np.partition(probs, n - m)[n - m]
        ids = np.flatnonzero(probs >= threshold)  # every tie of the m-th value, so the cut below is exact
    else:
        ids = np.arange(n)
    return ids[np.lexsort((ids, -probs[ids]))][:m]


def top_k_filter(probs: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the k largest probabilities (exactly k kept; among equal ones, the lowest ids)."""
    if k >= probs.size:
        return probs
    keep = top_ids(probs, k)
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out


def top_p_filter(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the most likely tokens up to and including the one whose cumulative probability
    (in descending order) first reaches p of the total; zero the rest."""
    target, n, m = p * probs.sum(), probs.size, 64
    while True:  # sort a growing head of the distribution until it holds mass p
        ids = top_ids(probs, min(m, n))
        mass = np.cumsum(probs[ids])
        if mass[-1] >= target or ids.size == n:
            break
        m *= 8
    keep = ids[mass - probs[ids] < target]  # the mass strictly ahead of a kept token is below p
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out


def min_p_filter(probs: np.ndarray, min_p: float) -> np.ndarray:
    """Zero the tokens less likely than min_p times the most likely one."""
    return np.where(probs >= min_p * probs.max(), probs, 0.0)


class Sampler:
    """Draws next tokens for a batch of `rows`, each row with its own random stream."""

    def __init__(self, params: SamplingParams, rows: int = 1):
        self.params = params
        # row i always draws from the i-th child stream of the seed, whatever the batch size
        self.rngs = [
            np.random.default_rng(child) for child in np.random.SeedSequence(params.seed).spawn(rows)
        ]

    def probs(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """The distribution the next token is drawn from (after penalty, temperature and filters)."""
        p = self.params
        if p.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, history, p.repetition_penalty)
        probs = softmax(logits, p.temperature or 1.0)
        if p.top_k is not None:
            probs = top_k_filter(probs, p.top_k)
        if p.top_p is not None and p.top_p < 1.0:
            probs = top_p_filter(probs, p.top_p)
        if p.min_p:
            probs = min_p_filter(probs, p.min_p)
        return probs / probs.sum()

    def logprobs(self, logits: np.ndarray, history: Sequence[int] | np.ndarray = ()) -> np.ndarray:
        """Log-probabilities (vocab,) after the repetition penalty and temperature (1 when greedy) but
        before top-k/top-p/min-p: OpenAI's convention, so a filtered-out token still gets its
        model log-probability rather than -inf, and greedy reports the model's own distribution."""
        p = self.params
        if p.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, history, p.repetition_penalty)
        return log_softmax(logits, p.temperature or 1.0)

    def sample(self, logits: np.ndarray, row: int = 0, history: Sequence[int] | np.ndarray = ()) -> int:
        """The next token for `row` given its logits (vocab,) and the ids it has seen so far."""
        if self.params.greedy:
            if self.params.repetition_penalty != 1.0:
                logits = apply_repetition_penalty(logits, history, self.params.repetition_penalty)
            return int(np.argmax(logits))
        cdf = np.cumsum(self.probs(logits, history))
        i = int(np.searchsorted(cdf, self.rngs[row].random() * cdf[-1], side="right"))
        return min(i, cdf.size - 1)
