"""The distillation objective: (1 - alpha) CE(labels) + alpha T^2 D(teacher_T, student_T), with the teacher
run live or read from a cache (the cached outputs arrive as the batch's extra tensors)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from tinylm.distill.cache import dense_logits
from tinylm.distill.teacher import LiveTeacher
from tinylm.errors import TinyLMError
from tinylm.train.objectives import DIVERGENCES, cross_entropy, distill_term, distillation_loss

DEFAULT_TOP_K = 64


@dataclass
class DistillConfig:
    alpha: float = 0.5  # weight of the teacher's term; 0 is plain training
    temperature: float = 2.0  # softens both distributions before comparing them
    divergence: str = "forward"  # "forward" KL(teacher || student), "reverse" KL(student || teacher), "jsd"
    beta: float = 0.5  # jsd: the mixture's weight on the teacher
    top_k: int | None = None  # a cache keeps this many logits per position (None: 64 new, a cache's own)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.divergence not in DIVERGENCES:
            problems.append(f"divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if not 0.0 < self.beta < 1.0:
            problems.append(f"beta must be in (0, 1), got {self.beta}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be positive, got {self.top_k}")
        if problems:
            raise TinyLMError("invalid distillation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Distill:
    """`objective(model, x, y, *cached) -> loss` for the trainer. With `cached` (values, ids, lse from a
    `WithTeacher` dataset) the teacher's logits come from the cache, otherwise from `teacher` run on x.
    Only the vocabulary both share (`vocab`) is compared; the CE term is the plain next-token loss."""

    def __init__(self, cfg: DistillConfig, vocab: int, teacher: LiveTeacher | None = None):
        self.cfg, self.vocab, self.teacher = cfg, vocab, teacher
        self._sums: torch.Tensor | None = None  # running (ce, kd, batches) since the last terms()

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *cached: torch.Tensor) -> torch.Tensor:
        logits = model(x)  # (B, T, student vocab)
        ce = cross_entropy(logits, y)
        kd = distill_term(logits[..., : self.vocab], self.teacher_logits(x, cached), y,
                          temperature=self.cfg.temperature, kind=self.cfg.divergence, beta=self.cfg.beta)  # fmt: skip
        step = torch.stack([ce.detach(), kd.detach(), torch.ones_like(ce)])
        self._sums = step if self._sums is None else self._sums + step
        return distillation_loss(ce, kd, self.cfg.alpha, self.cfg.temperature)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor, cached: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if cached:
            return dense_logits(*cached, self.vocab)
        if self.teacher is None:
            raise TinyLMError("distillation needs a teacher: a live one or a cache")
        return self.teacher(x)

    def terms(self) -> dict[str, float]:
        """Mean CE and soft (distillation) term over the batches since the last call (for the metrics log)."""
        if self._sums is None:
            return {}
        ce, kd, n = self._sums.tolist()
        self._sums = None
        return {"train_ce": ce / n, "train_kd": kd / n}
