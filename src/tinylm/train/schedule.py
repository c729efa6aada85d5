"""Learning rate as a pure function of the step: nothing to save beyond the step itself.

All schedules warm up linearly over `warmup_steps`, then
- cosine:   decay along half a cosine to `min_lr` at the last step;
- wsd:      hold `lr` (stable), then decay linearly to `min_lr` over the last `decay_frac` of the steps
            (warmup-stable-decay: the stable phase lets a run be extended or cut without re-planning);
- constant: hold `lr`.
"""

from __future__ import annotations

import math

from tinylm.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, max_steps: int | None = None) -> float:
    """The learning rate for optimizer step `step` (0-based) of a run of `max_steps` steps."""
    max_steps = cfg.max_steps if max_steps is None else max_steps
    last = max_steps - 1
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, last - cfg.warmup_steps))
        return cfg.final_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.final_lr)
    start = decay_start(cfg, max_steps)
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start) / max(1, last - start))
    return cfg.lr - progress * (cfg.lr - cfg.final_lr)


def decay_start(cfg: TrainConfig, max_steps: int) -> int:
    """The first step whose rate depends on max_steps (a time-budgeted run stops re-planning there)."""
    if cfg.schedule == "cosine":
        return cfg.warmup_steps
    if cfg.schedule == "wsd":
        return max(cfg.warmup_steps, max_steps - round(cfg.decay_frac * max_steps))
    return max_steps
