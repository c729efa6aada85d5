"""TrainConfig: every setting of a training run, saved as JSON in the checkpoint so a run can resume.

Compile "auto" (None): torch.compile when the session is long enough to repay the warm-up. On a 2-core
CPU compiling a small model's training step took about a minute at load 2 and 5-9 minutes at load 12-18
(benchmarks/bench_train_cpu.py), and made its steps 1.3-2.2x faster than eager, so on a machine not
overloaded it pays from a few minutes of training on: a budget of COMPILE_MINUTES or more, or
COMPILE_STEPS steps or more without one. On the CPU it also needs a C
compiler (inductor builds its kernels with g++ or $CXX, offline); MPS stays eager.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.fields import from_json

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MINUTES = 5.0
COMPILE_STEPS = 1000


@dataclass
class TrainConfig:
    out_dir: str = "runs/tinylm"
    data: str | None = None  # what was trained on (a prepared shard directory, text file or dataset name)
    tokenizer: str = "bpe"  # when `data` has to be prepared first: the tokenizer (see `tinylm prepare`)
    vocab_size: int = 4096  # ... and the vocabulary of a trained one
    # batch: `batch_size` sequences per forward pass and process; `batch_tokens` per optimizer step over
    # all processes, reached by gradient accumulation (None: one forward pass per process and step)
    batch_size: int = 16
    batch_tokens: int | None = None
    max_steps: int = 1000
    minutes: float | None = None  # wall-clock budget: max_steps is fitted to the measured step time
    # optimizer and schedule
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    schedule: str = "cosine"  # "cosine", "wsd" (warmup-stable-decay) or "constant" (after warmup)
    warmup_steps: int | None = None  # None: 5% of the run's steps, at most 100 (see train.schedule)
    decay_frac: float = 0.2  # wsd: share of max_steps spent decaying at the end
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0: no clipping
    # evaluation, logging, checkpoints
    eval_interval: int | None = None  # None: about 8 evaluations per run, at least every 200 steps
    eval_batches: int = 20
    log_interval: int = 10
    max_bad_steps: int = 5  # stop after this many NaN/inf losses in a row
    # machine
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16" (fp16 uses a GradScaler)
    compile: bool | None = None  # None: when the run is long enough to repay the warm-up (see train.device)
    prefetch: bool = True  # gather the next step's batches in a background thread while this one computes
    seed: int = 1337

    def __post_init__(self) -> None:
        problems = []
        for name in ("batch_size", "max_steps", "eval_interval", "eval_batches", "log_interval", "max_bad_steps"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.batch_tokens is not None and self.batch_tokens <= 0:
            problems.append("batch_tokens must be positive")
        if self.minutes is not None and self.minutes <= 0:
            problems.append("minutes must be positive")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        if not 0.0 < self.decay_frac <= 1.0:
            problems.append("decay_frac must be in (0, 1]")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if problems:
            raise TinyLMError("invalid training settings: " + "; ".join(problems))

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "training settings") -> TrainConfig:
        return from_json(cls, d, source, what="training setting")


def pick_compile(asked: bool | None, device_type: str, steps: int, minutes: float | None) -> bool:
    """Whether to torch.compile a session of `steps` steps (or of a budget of `minutes`): as asked, else
    by its length (see the module docstring)."""
    if asked is not None:
        return asked
    if device_type == "mps" or (device_type == "cpu" and not _have_cxx()):
        return False
    return minutes >= COMPILE_MINUTES if minutes is not None else steps >= COMPILE_STEPS


def _have_cxx() -> bool:
    """The C++ compiler inductor builds CPU kernels with: $CXX, else g++ (clang++ on macOS)."""
    return shutil.which(os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")) is not None
