"""`tinylm train --engine numpy` on prepared shards: data windows, initial weights, then the NumPy trainer."""

from __future__ import annotations

from pathlib import Path

from tinylm.config import ModelConfig
from tinylm.data.shards import TokenShards
from tinylm.nptrain.checkpoint import load_plain
from tinylm.nptrain.trainer import Data, Result, train
from tinylm.train.config import TrainConfig
from tinylm.train.windows import Windows


def train_on_shards(cfg: TrainConfig, where: Path, model_config: ModelConfig, *, init: str | None = None,
                    resume: bool = False, quiet: bool = False) -> Result:  # fmt: skip
    """Train on the prepared directory `where` (windows of the model's context); init: a checkpoint
    whose weights (and tokenizer, when the shards have none) to start from."""
    T = model_config.context_length
    train_split, val_split = TokenShards(where, "train"), TokenShards(where, "val")
    tokenizer = train_split.tokenizer if train_split.manifest is not None else None
    weights = None
    if init is not None:
        from tinylm.tokenizer import load_tokenizer

        weights = load_plain(Path(init))[1]
        if tokenizer is None and (Path(init) / "tokenizer").is_dir():
            tokenizer = load_tokenizer(Path(init) / "tokenizer")
    data = Data(Windows(train_split, T, f"{where} (train split)"),
                Windows(val_split, T, f"{where} (validation split; prepare with a larger --val-fraction)"),
                tokenizer, Path(cfg.data or where).name)  # fmt: skip
    return train(cfg, data, model_config, weights=weights, resume=resume, quiet=quiet)
