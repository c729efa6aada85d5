"""A `tinylm train` run end to end: settings (new or resumed), data (prepared once, on the main
process), model shape (vocabulary from the tokenizer), then the trainer.

Torch is imported only on the torch engine's path, so `tinylm train --engine numpy` runs without it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinylm.config import ModelConfig, load_config
from tinylm.data.shards import TokenShards
from tinylm.errors import TinyLMError
from tinylm.runlock import run_lock
from tinylm.train import distributed
from tinylm.train.config import TrainConfig
from tinylm.train.data import check_data, prepare_data, prepared_dir
from tinylm.train.progress import LAST, Saved, check_new_run
from tinylm.train.shapes import build_config

if TYPE_CHECKING:
    from tinylm.train.objectives import Objective
    from tinylm.train.trainer import EvalHook, TrainData

# Another objective for the run, chosen once data and model shape are known: (cfg, data, model config) ->
# (training data, possibly with more per example, the objective, an evaluation hook or None)
Setup = Callable[[TrainConfig, "TrainData", ModelConfig], "tuple[TrainData, Objective, EvalHook | None]"]


def run_training(train_args: dict[str, Any], model_args: dict[str, Any], *, init: str | None = None,
                 resume: bool = False, quiet: bool = False, engine: str = "torch",
                 setup: Setup | None = None, overwrite: bool = False) -> Any:  # fmt: skip
    """`train_args`: TrainConfig fields that were given; `model_args`: preset/family and sizes that were
    given (build_config's names). On resume, the saved settings apply except those given here.
    engine "numpy": train with tinylm.nptrain (same data, checkpoints and resume) instead of torch.
    `setup`: another objective than next-token prediction (e.g. distillation; torch only), see `Setup`."""
    out = Path(train_args.get("out_dir", TrainConfig.out_dir))
    main = distributed.from_env().main
    if not resume:  # before the run folder exists: a mistyped --data leaves nothing behind
        check_data(train_args.get("data"))
    with run_lock(out) if main else contextlib.nullcontext():  # one writer per run folder, from the start
        if main:
            check_new_run(out, resume, overwrite)
        return _run(out, train_args, model_args, init, resume, quiet, engine, setup, overwrite)


def _run(out: Path, train_args: dict[str, Any], model_args: dict[str, Any], init: str | None, resume: bool,
         quiet: bool, engine: str, setup: Setup | None, overwrite: bool) -> Any:  # fmt: skip
    saved_model = None
    if resume:
        cfg = Saved.load(out / LAST).cfg.replace(**train_args)
        if "max_steps" in train_args and "minutes" not in train_args:
            cfg = cfg.replace(minutes=None)  # --steps extends a --minutes run by steps
        saved_model = load_config(out / LAST)
    else:
        cfg = TrainConfig(**train_args)
    d = distributed.from_env()
    if engine == "numpy" and d.enabled:
        raise TinyLMError("the NumPy trainer runs in one process; start it without torchrun, or use --engine torch")
    if engine == "numpy" and setup is not None:
        raise TinyLMError("the NumPy trainer knows only next-token prediction; use --engine torch")
    if engine == "torch":
        from tinylm.train.device import pick_device

        distributed.start(d, pick_device(cfg.device, d.local_rank))
    try:
        where, todo = prepared_dir(cfg.data, cfg.out_dir, cfg.tokenizer, cfg.vocab_size)
        if todo and d.main:
            prepare_data(cfg.data, where, cfg.tokenizer, cfg.vocab_size, progress=not quiet)
        distributed.barrier(d)
        tok = TokenShards(where, "val").tokenizer if (where / "manifest.json").is_file() else None
        vocab = tok.vocab_size if tok is not None else _max_id(where) + 1
        init = init if init and not resume else None
        if init is not None:
            if model_args:
                raise TinyLMError("--init takes the model shape from the checkpoint; drop the shape options")
            model_config = load_config(init)
        elif saved_model is not None and not model_args:
            model_config = saved_model
        else:
            model_config = build_config(vocab, **model_args)
        if engine == "numpy":
            from tinylm.nptrain.session import train_on_shards

            return train_on_shards(cfg, where, model_config, init=init, resume=resume, quiet=quiet)
        from tinylm.checkpoint import load_checkpoint  # the torch engine from here on
        from tinylm.train.data import shard_data
        from tinylm.train.objectives import next_token
        from tinylm.train.trainer import train

        model = load_checkpoint(init).model.train() if init is not None else None
        data = shard_data(where, model_config.context_length, name=Path(cfg.data).name)
        if data.tokenizer is None and model is not None:
            data.tokenizer = load_checkpoint(init).tokenizer
        data, objective, on_eval = setup(cfg, data, model_config) if setup else (data, next_token, None)
        return train(cfg, data, None if model is not None else model_config, model=model, resume=resume,
                     on_eval=on_eval, objective=objective, quiet=quiet, overwrite=overwrite)  # fmt: skip
    finally:
        distributed.stop(d)


def _max_id(where: Path) -> int:
    """The vocabulary of bare shards (no manifest, so no tokenizer): the largest id in them."""
    return max(int(np.max(a)) for split in ("train", "val") for a in TokenShards(where, split).arrays if a.size)
