"""Training: `train(TrainConfig, TrainData, ModelConfig)` and the pieces it is built from.

The names below load on first use, so importing a torch-free piece (`tinylm.train.schedule`,
`tinylm.train.config`) does not pull in torch through this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Result", "TrainConfig", "TrainData", "evaluate", "train"]


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from tinylm.train.config import TrainConfig

        return TrainConfig
    if name in ("Result", "TrainData", "evaluate", "train"):
        from tinylm.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'tinylm.train' has no attribute {name!r}")
