"""A `tinylm distill` run: the `tinylm train` run (data, student shape, trainer) with the distillation
objective set up once the data and the student are known. The distillation settings are kept in
`<out>/distill.json`, so `--resume` continues with the same teacher and settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.distill.cache import MANIFEST, TeacherCache, WithTeacher, identity, open_cache, write_cache
from tinylm.distill.objective import DEFAULT_TOP_K, Distill, DistillConfig
from tinylm.distill.teacher import LiveTeacher, TeacherInfo, check_context, common_vocab
from tinylm.errors import TinyLMError
from tinylm.fileio import write_json
from tinylm.train import distributed
from tinylm.train.batches import Dataset, Strided
from tinylm.train.config import TrainConfig
from tinylm.train.device import Precision, pick_device, pick_precision
from tinylm.train.session import Setup, run_training
from tinylm.train.trainer import EvalHook, Result, TrainData

SETTINGS_FILE = "distill.json"


def run_distill(train_args: dict[str, Any], model_args: dict[str, Any], distill_args: dict[str, Any], *,
                student: str | None = None, resume: bool = False, quiet: bool = False,
                overwrite: bool = False) -> Result:  # fmt: skip
    """`distill_args`: teacher, cache and DistillConfig fields that were given (on resume, the saved ones
    fill in the rest); `student`: a preset name or a checkpoint to start from (or None: the shape options)."""
    out = Path(train_args.get("out_dir", TrainConfig.out_dir))
    settings = {**(_saved(out) if resume else {}), **distill_args}
    teacher = settings.pop("teacher", None)
    if teacher is None:
        raise TinyLMError("--teacher is required: the checkpoint whose predictions the student learns from")
    cache = settings.pop("cache", None)
    dcfg = DistillConfig(**settings)
    info = TeacherInfo.read(teacher)
    if not resume and "tokenizer" not in train_args and info.tokenizer is not None:
        train_args = {**train_args, "tokenizer": str(info.path / "tokenizer")}  # text is tokenised the teacher's way
    init = None
    if student is not None and Path(student).is_dir():
        if model_args:
            raise TinyLMError(f"--student {student} is a checkpoint and brings its own shape; drop the shape options")
        init = student
    elif student is not None:
        model_args = {**model_args, "preset": student}
    setup = distill_setup(info, dcfg, cache, quiet)
    return run_training(train_args, model_args, init=init, resume=resume, quiet=quiet, setup=setup,
                        overwrite=overwrite)  # fmt: skip


def distill_setup(info: TeacherInfo, dcfg: DistillConfig, cache: str | None, quiet: bool = False) -> Setup:
    """The trainer's objective for distilling from `info`'s teacher: live, or from the cache at `cache`
    (then the examples are the context-long windows that tile the training tokens, one cache row each)."""

    def setup(cfg: TrainConfig, data: TrainData, model_config: ModelConfig) -> tuple[TrainData, Distill, EvalHook]:
        seq_len = data.train.get(torch.zeros(1, dtype=torch.long))[0].shape[1]
        check_context(info, seq_len)
        vocab = common_vocab(info, model_config, data.tokenizer)
        if cache is None:
            objective = Distill(dcfg, vocab, LiveTeacher.load(info, vocab, compile=cfg.compile))
        else:
            train = Strided(data.train, seq_len)
            cached = teacher_cache(cache, info, train, vocab, dcfg.top_k, cfg, quiet)
            data = dataclasses.replace(data, train=WithTeacher(train, cached))
            objective = Distill(dcfg, vocab)
        d = distributed.from_env()
        if d.main:
            write_json(Path(cfg.out_dir) / SETTINGS_FILE, {"teacher": str(info.path), "cache": cache, **dcfg.to_dict()})
            if not quiet:
                print(f"distilling from {info.path} ({info.config.family}, {info.config.n_layers} layers, dim "
                      f"{info.config.dim}; {'teacher live' if cache is None else 'cached teacher ' + cache}): alpha "
                      f"{dcfg.alpha:g}, temperature {dcfg.temperature:g}, {dcfg.divergence} divergence over "
                      f"{vocab:,} tokens")  # fmt: skip
        return data, objective, lambda model: objective.terms()

    return setup


def teacher_cache(directory: str, info: TeacherInfo, train: Dataset, vocab: int, top_k: int | None,
                  cfg: TrainConfig, quiet: bool = False) -> TeacherCache:  # fmt: skip
    """The cache at `directory` for this teacher and data: checked when it exists, else written once (by
    the main process) with one teacher pass over the training examples."""
    where, d = Path(directory), distributed.from_env()
    expected = identity(info, train, vocab)
    if d.main and not (where / MANIFEST).is_file():
        if where.exists() and any(where.iterdir()):
            raise TinyLMError(f"--cache-teacher {where}: the directory holds other files, not a teacher cache; give "
                              "a new or empty directory")  # fmt: skip
        device = pick_device(cfg.device, d.local_rank)
        precision = Precision(pick_precision(cfg.precision, device), device)
        c = write_cache(where, LiveTeacher.load(info, vocab), expected, train, top_k or DEFAULT_TOP_K,
                        batch_size=cfg.batch_size, device=device, autocast=precision.autocast,
                        progress=not quiet)  # fmt: skip
        if not quiet:
            m = c.manifest
            print(f"teacher cache {where}: the top {m['top_k']} of {vocab:,} logits per position hold "
                  f"{m['kept_mass_mean']:.1%} of the teacher's probability on average (least "
                  f"{m['kept_mass_min']:.1%})")  # fmt: skip
    distributed.barrier(d)  # the other processes read what the main one wrote
    return open_cache(where, expected, top_k)


def _saved(out: Path) -> dict[str, Any]:
    f = out / SETTINGS_FILE
    if not f.is_file():
        return {}  # then the settings must all be given again
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{f}: unreadable distillation settings ({e}); give them again without --resume") from None
