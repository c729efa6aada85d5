"""`evaluate_models`: several models, one text, one protocol -> one result per model.

The standard errors come from the per-position numbers, treating positions as independent (as
llama-perplexity does; neighbouring positions are correlated, so they are somewhat optimistic):
  loss:        std(losses) / sqrt(n)
  perplexity:  exp(mean loss) * se(loss), the delta method for exp()
  KL:          std(kl) / sqrt(n);  top-1: sqrt(p (1 - p) / n)
Bits per byte = total nats / (ln 2 * UTF-8 bytes spelled by the scored tokens), see protocols.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.eval.data import Documents, load_documents
from tinylm.eval.models import ModelSpec, Scored, load_model
from tinylm.eval.protocols import Protocol
from tinylm.eval.scoring import Scores, score


@dataclass
class EvalResult:
    model: str
    protocol: str  # the protocol and its parameters, in words
    tokens: int  # positions scored
    bytes: int  # UTF-8 bytes those tokens spell
    loss: float  # mean nats per token
    loss_se: float
    perplexity: float
    perplexity_se: float
    bits_per_byte: float | None  # None when no bytes were scored
    kl: float | None = None  # mean KL(reference || model), nats per token
    kl_se: float | None = None
    top1: float | None = None  # share of positions whose most likely token matches the reference's
    top1_se: float | None = None
    seconds: float = 0.0
    scores: Scores | None = field(default=None, repr=False, compare=False)  # the per-position numbers

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("scores")
        return {**d, "tokens_per_s": self.tokens_per_s}


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def summarize(name: str, protocol: str, s: Scores, seconds: float = 0.0) -> EvalResult:
    """An EvalResult from per-position numbers."""
    if s.losses.size == 0:
        raise TinyLMError(f"{name}: the text is too short to score a single token under this protocol; give more text")
    loss, loss_se = _mean_se(s.losses)
    result = EvalResult(
        model=name, protocol=protocol, tokens=int(s.losses.size), bytes=s.nbytes, loss=loss, loss_se=loss_se,
        perplexity=math.exp(loss), perplexity_se=math.exp(loss) * loss_se,
        bits_per_byte=float(s.losses.sum()) / (math.log(2) * s.nbytes) if s.nbytes else None, seconds=seconds,
        scores=s,
    )  # fmt: skip
    if s.kl is not None and s.agree is not None:
        result.kl, result.kl_se = _mean_se(s.kl)
        p = float(s.agree.mean())
        result.top1, result.top1_se = p, math.sqrt(p * (1 - p) / s.agree.size)
    return result


def check_reference(model: Scored, reference: Scored, docs: Documents) -> None:
    """The reference must score the same positions over the same vocabulary: same size, same ids."""
    if model.vocab_size != reference.vocab_size:
        raise TinyLMError(f"--reference {reference.name} has a vocabulary of {reference.vocab_size} but {model.name} "
                          f"has {model.vocab_size}; KL needs models with the same vocabulary")  # fmt: skip
    sample = next(iter(docs))[:2000]
    if model.tokenizer.encode(sample) != reference.tokenizer.encode(sample):
        raise TinyLMError(f"--reference {reference.name} tokenizes the text differently from {model.name}; "
                          "KL needs models with the same tokenizer")  # fmt: skip


def evaluate_models(models: Sequence[ModelSpec], data: str | Path | Iterable[str], *,
                    protocol: Protocol | None = None, reference: ModelSpec | None = None,
                    engine: str = "torch", device: str = "cpu", batch_size: int = 8,
                    max_tokens: int | None = None, progress: bool = True) -> list[EvalResult]:  # fmt: skip
    """Score each model on the same documents, one EvalResult per model, in order.

    `models` and `reference`: checkpoint paths or in-memory `(model, tokenizer)` pairs (a torch Model
    or a NumpyModel). `data`: a text file, folder, glob, dataset name or prepared shard folder (see
    `load_documents`), or the documents themselves. Each model loads only while it is scored."""
    protocol = protocol or Protocol()
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise TinyLMError("batch size and max tokens must be positive")
    docs = data if isinstance(data, Documents) else (
        load_documents(data) if isinstance(data, str | Path)
        else Documents((d for d in data if d.strip()), "the given documents"))  # fmt: skip
    docs.check_not_empty()
    ref = None if reference is None else load_model(reference, engine, device, "reference")
    results = []
    for i, spec in enumerate(models):
        model = load_model(spec, engine, device, f"model {i + 1}")
        if ref is not None:
            check_reference(model, ref, docs)
        t0 = time.perf_counter()
        s = score(model, docs, protocol, ref, batch_size, max_tokens, progress)
        described = protocol.describe(protocol.window_length(model.context_length))
        results.append(summarize(model.name, described, s, time.perf_counter() - t0))
    return results
