"""`tinylm finetune`: adapt a trained checkpoint to chat/instruction data, on the same trainer.

  full   every weight trains; checkpoints are whole models.
  lora   the base is frozen and LoRA updates train (tinylm.adapters); checkpoints hold only the adapter
         (a few hundred KB) and name the base, on top of which every command loads them.
  qlora  as lora over the base quantized to NF4 (tinylm.quantize): the quantized base is written once to
         <out>/base-nf4 and the adapter checkpoints name it, so what loads is exactly what trained.

The loss is next-token cross-entropy on the assistant's replies only: the rows' targets are -1 elsewhere
(tinylm.train.instruct).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm import transforms
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.config import read_config
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.runlock import run_lock
from tinylm.train import distributed, instruct
from tinylm.train.config import TrainConfig
from tinylm.train.state import Saved
from tinylm.train.trainer import LAST, Result, TrainData, check_new_run, train

METHODS = ("lora", "qlora", "full")
QLORA_BASE = "base-nf4"
# fine-tuning is short and starts from a trained model: fewer steps, warmup and evaluations than pretraining;
# LoRA's few parameters take a larger learning rate than full fine-tuning (and no weight decay)
DEFAULTS = {"out_dir": "runs/finetune", "max_steps": 300, "batch_size": 8, "warmup_steps": 20, "eval_interval": 50, "eval_batches": 10}
METHOD_DEFAULTS = {"lora": {"lr": 2e-3, "weight_decay": 0.0}, "qlora": {"lr": 2e-3, "weight_decay": 0.0},
                   "full": {"lr": 2e-4}}  # fmt: skip


@dataclass
class Options:
    base: str
    data: str
    method: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = "all"
    on_error: str = "stop"
    too_long: str = "drop"
    val_frac: float = 0.05
    words_test: str | None = None  # story-words held-out prompts, scored at each evaluation
    words_n: int = 32


def run_finetune(opts: Options, train_args: dict[str, Any], resume: bool = False, quiet: bool = False,
                 overwrite: bool = False) -> Result:  # fmt: skip
    if opts.method not in METHODS:
        raise TinyLMError(f"--method must be one of {', '.join(METHODS)}, got {opts.method!r}")
    out = Path(train_args.get("out_dir", DEFAULTS["out_dir"]))
    main = distributed.from_env().main
    if not resume:  # before the run folder exists: a mistyped path leaves nothing behind
        read_config(opts.base)
        if not Path(opts.data).is_file():
            raise instruct.no_such_file(opts.data)
    with run_lock(out) if main else contextlib.nullcontext():  # before QLoRA writes its base into the run folder
        if main:
            check_new_run(out, resume, overwrite)
        return _run(opts, train_args, out, resume, quiet, overwrite)


def _run(opts: Options, train_args: dict[str, Any], out: Path, resume: bool, quiet: bool, overwrite: bool) -> Result:
    if resume:  # the saved settings, except those given again
        cfg = Saved.load(out / LAST).cfg.replace(**train_args)
    else:
        cfg = TrainConfig(**{**DEFAULTS, **METHOD_DEFAULTS[opts.method], "data": opts.data, **train_args})
    ckpt = load_checkpoint(opts.base)
    if ckpt.tokenizer is None:
        raise TinyLMError(f"{opts.base}: no tokenizer in the checkpoint, so conversations cannot be encoded")
    tok, ctx = ckpt.tokenizer, ckpt.config.context_length
    train_r, val_r = instruct.split(instruct.read_jsonl(opts.data, opts.on_error, quiet), opts.val_frac, cfg.seed)
    data = TrainData(instruct.encode(train_r, tok, ctx, opts.too_long, quiet, name=opts.data),
                     instruct.encode(val_r, tok, ctx, opts.too_long, quiet=True), tok, Path(opts.data).name)  # fmt: skip
    model, base = _model(ckpt.model, opts, Path(cfg.out_dir), resume)
    on_eval = _words_hook(opts, tok) if opts.words_test else None
    if not quiet and opts.method != "full":
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{opts.method}: training {n:,} adapter parameters ({n / model.config.num_params():.2%} of the base), "
              f"rank {opts.rank}, alpha {opts.alpha:g}, targets {','.join(transforms.applied(model)['adapters']['targets'])}")  # fmt: skip
    return train(cfg, data, model=model.train(), resume=resume, on_eval=on_eval, base=base, quiet=quiet,
                 overwrite=overwrite)  # fmt: skip


def _model(model: Model, opts: Options, out: Path, resume: bool) -> tuple[Model, str | None]:
    """The model to train and the base its checkpoints name (None: whole checkpoints)."""
    if opts.method == "full":
        if transforms.applied(model):
            raise TinyLMError(f"{opts.base}: a quantized or adapted checkpoint cannot be fully fine-tuned; "
                              "use --method lora, or merge/dequantize it first")  # fmt: skip
        return model, None
    from tinylm.adapters.spec import LoraSpec, parse_targets

    base = opts.base
    if opts.method == "qlora":
        base = str(out / QLORA_BASE)
        if resume and (out / QLORA_BASE).is_dir():
            model = load_checkpoint(base).model
        else:
            from tinylm.quantize.transform import make_spec

            transforms.apply(model, "quantization", make_spec("nf4"))  # deterministic: the same in every process
            if distributed.from_env().main:
                save_checkpoint(base, model)
    spec = LoraSpec(opts.rank, opts.alpha, opts.dropout, parse_targets(opts.targets, model.config))
    transforms.apply(model, "adapters", spec.to_dict())
    return model, base


def _words_hook(opts: Options, tok: Any):
    from tinylm.train.tasks.story_words import words_rate

    records = instruct.read_jsonl(opts.words_test, quiet=True)[: opts.words_n]  # type: ignore[arg-type]
    if not all("words" in r.extra for r in records):
        raise TinyLMError(f"{opts.words_test}: lines need a \"words\" list (write them with `tinylm task story-words`)")

    def hook(model: Model) -> dict[str, Any]:
        score = words_rate(model, tok, records)
        model.train()
        return {"words_rate": score.rate, "words_word_rate": score.word_rate}

    return hook
