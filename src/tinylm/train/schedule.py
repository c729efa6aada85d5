"""Learning rate as a pure function of the step: nothing to save beyond the step itself.

All schedules warm up linearly over the warmup steps, then
- cosine:   decay along half a cosine to `min_lr` at the last step;
- wsd:      hold `lr` (stable), then decay linearly to `min_lr` over the last `decay_frac` of the steps
            (warmup-stable-decay: the stable phase lets a run be extended or cut without re-planning);
- constant: hold `lr`.

Warmup and the evaluation interval follow the run's length unless set: a `--minutes` run whose budget
allows 100 steps warms up for 5 of them and evaluates every 13, not for 100 and at 200.

Extending a run (`--resume` with more `--steps` or `--minutes`) re-plans the same schedule for the new
length and continues from the step reached: a wsd run that was still stable just stays stable longer;
a finished one (or a cosine one) rises back to where the longer schedule is at that step, then decays.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.train.config import TrainConfig
from tinylm.train.metrics import duration

AUTO_WARMUP_FRAC, AUTO_WARMUP_MAX = 0.05, 100
AUTO_EVALS, AUTO_EVAL_MAX = 8, 200


def warmup_steps(cfg: TrainConfig, max_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return min(AUTO_WARMUP_MAX, round(AUTO_WARMUP_FRAC * max_steps))


def eval_interval(cfg: TrainConfig, max_steps: int) -> int:
    if cfg.eval_interval is not None:
        return cfg.eval_interval
    return max(1, min(AUTO_EVAL_MAX, math.ceil(max_steps / AUTO_EVALS)))


def lr_at(step: int, cfg: TrainConfig, max_steps: int | None = None) -> float:
    """The learning rate for optimizer step `step` (0-based) of a run of `max_steps` steps."""
    max_steps = cfg.max_steps if max_steps is None else max_steps
    last, warmup = max_steps - 1, warmup_steps(cfg, max_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, last - warmup))
        return cfg.final_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.final_lr)
    start = decay_start(cfg, max_steps)
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start) / max(1, last - start))
    return cfg.lr - progress * (cfg.lr - cfg.final_lr)


def decay_start(cfg: TrainConfig, max_steps: int) -> int:
    """The first step whose rate depends on max_steps beyond the warmup's length (a time-budgeted run
    stops re-planning there)."""
    warmup = warmup_steps(cfg, max_steps)
    if cfg.schedule == "cosine":
        return warmup
    if cfg.schedule == "wsd":
        return max(warmup, max_steps - round(cfg.decay_frac * max_steps))
    return max_steps


def resumed_length(cfg: TrainConfig, p: Any, where: Path) -> None:
    """A resumed run goes on to the --steps or --minutes now asked for (totals since the run began), so
    giving more extends it; a --minutes run's steps are first estimated from its pace so far.
    `p`: the saved Progress (either trainer's), changed in place."""
    if cfg.minutes:
        left = 60 * cfg.minutes - p.seconds
        if left > 0 and p.step:
            p.max_steps = p.step + max(1, int(left * p.step / p.seconds))
        if left <= 0:
            raise TinyLMError(f"{where.parent} has trained for {duration(p.seconds)} ({p.step:,} steps), all of "
                              f"its {cfg.minutes:g} minutes; to extend it, resume with a larger --minutes "
                              "(the total) or --steps")  # fmt: skip
        return
    p.max_steps = cfg.max_steps
    if p.step >= p.max_steps:
        raise TinyLMError(f"{where.parent} has trained {p.step:,} of {p.max_steps:,} steps; to extend it, resume "
                          "with a larger --steps (the total) or --minutes")  # fmt: skip
