"""Training: `train(TrainConfig, TrainData, ModelConfig)` and the pieces it is built from."""

from tinylm.train.config import TrainConfig
from tinylm.train.trainer import Result, TrainData, evaluate, train

__all__ = ["Result", "TrainConfig", "TrainData", "evaluate", "train"]
