"""`tinylm train`: train a GPT-2 or Llama 2 model from a text file, prepared shards or a named dataset."""

from __future__ import annotations

import argparse
from typing import Any

from tinylm.threads import add_threads_argument

NAME = "train"
ORDER = 40
HELP = "Train a model (GPT-2 or Llama 2 shape) on a text file, prepared shards or a named dataset."
EXAMPLES = """
  tinylm train --data story.txt --out runs/story                 # prepare the file (BPE 4096), train the default model
  tinylm train --data data/tinystories --preset stories260K --steps 5000 --out runs/s260k
  tinylm train --data pystdlib --minutes 10 --family gpt2 --layers 6 --dim 192 --heads 6
  tinylm train --data data/ts --batch-size 16 --batch-tokens 65536 --schedule wsd --no-compile
  tinylm train --out runs/s260k --resume --steps 8000           # continue (here: longer) where it stopped
  torchrun --nproc-per-node 2 -m tinylm train --data data/ts --out runs/ddp   # data parallel
  tinylm train --data data/ts --preset stories260K --engine numpy --out runs/np   # no PyTorch: NumPy backward
"""
S = argparse.SUPPRESS  # options not given stay unset, so --resume knows what was asked to change


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="SPEC", default=S, help="text file, `tinylm prepare` output directory, or dataset name "
                   "(pydocs, pystdlib, tinystories, shakespeare)")  # fmt: skip
    g.add_argument("--tokenizer", metavar="KIND", default=S, help="when preparing: bpe, sentencepiece, char, llama2, gpt2 or a "
                   "tokenizer path (default: bpe)")  # fmt: skip
    g.add_argument("--vocab-size", metavar="N", type=int, default=S, help="when training a tokenizer (default: 4096)")


def add_model_arguments(p: argparse.ArgumentParser, title: str = "llama, 4 layers, dim 128, 4 heads, context 256",
                        skip: tuple[str, ...] = ()) -> None:  # fmt: skip
    g = p.add_argument_group(f"model (default: {title})")
    if "preset" not in skip:
        g.add_argument("--preset", metavar="NAME", default=S, help="a named shape (see `tinylm models`); the vocabulary follows the data")
    g.add_argument("--family", choices=("llama", "gpt2"), default=S, help="architecture for a custom shape")
    g.add_argument("--layers", dest="n_layers", metavar="N", type=int, default=S, help="transformer blocks")
    g.add_argument("--dim", type=int, default=S, help="width of the residual stream (a multiple of --heads)")
    g.add_argument("--heads", dest="n_heads", metavar="N", type=int, default=S, help="attention heads")
    g.add_argument("--kv-heads", dest="n_kv_heads", metavar="N", type=int, default=S, help="fewer than --heads: grouped-query")
    if "context" not in skip:
        g.add_argument("--context", dest="context_length", metavar="T", type=int, default=S, help="tokens per training sequence")
    g.add_argument("--dropout", type=float, default=S, help="dropout probability (default 0)")
    if "init" not in skip:
        g.add_argument("--init", metavar="CKPT", default=S, help="start from this checkpoint's weights (fine-tuning)")


def add_train_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """The training options; `defaults`: the settings a task uses instead of TrainConfig's (shown as they are)."""
    from tinylm.train.config import COMPILE_MINUTES, COMPILE_STEPS, TrainConfig

    d = {**TrainConfig().to_dict(), **(defaults or {})}
    warmup = "5%% of the steps, at most 100" if d["warmup_steps"] is None else d["warmup_steps"]
    evals = "about 8 times per run, at least every 200 steps" if d["eval_interval"] is None else d["eval_interval"]
    min_lr = "lr/10" if d["min_lr"] is None else d["min_lr"]
    g = p.add_argument_group("training")
    g.add_argument("--out", dest="out_dir", metavar="DIR", default=S,
                   help=f"run directory: last/, best/, metrics.jsonl, loss.png (default {d['out_dir']})")
    g.add_argument("--steps", dest="max_steps", metavar="N", type=int, default=S,
                   help=f"optimizer steps in all (default {d['max_steps']}); with --resume, more extends the run")
    g.add_argument("--minutes", type=float, default=S, help="train for this long instead (in all; with --resume, more "
                   "extends the run): the steps, warmup and evaluations are fitted to it")
    g.add_argument("--batch-size", metavar="B", type=int, default=S,
                   help=f"sequences per forward pass and process (default {d['batch_size']})")
    g.add_argument("--batch-tokens", metavar="N", type=int, default=S,
                   help="tokens per optimizer step, by gradient accumulation (default: one batch)")
    g.add_argument("--lr", type=float, default=S, help=f"peak learning rate (default {d['lr']:g})")
    g.add_argument("--min-lr", type=float, default=S, help=f"final learning rate (default {min_lr})")
    g.add_argument("--schedule", choices=("cosine", "wsd", "constant"), default=S,
                   help=f"after warmup (default {d['schedule']})")
    g.add_argument("--warmup-steps", metavar="N", type=int, default=S, help=f"linear warmup (default {warmup})")
    g.add_argument("--decay-frac", type=float, default=S,
                   help=f"wsd: share of steps spent decaying (default {d['decay_frac']:g})")
    g.add_argument("--weight-decay", type=float, default=S, help=f"on matrices only (default {d['weight_decay']:g})")
    g.add_argument("--beta2", type=float, default=S, help=f"AdamW beta2 (default {d['beta2']:g})")
    g.add_argument("--grad-clip", type=float, default=S,
                   help=f"max gradient norm, 0 for none (default {d['grad_clip']:g})")
    g.add_argument("--eval-interval", metavar="N", type=int, default=S,
                   help=f"evaluate and checkpoint every N steps (default {evals})")
    g.add_argument("--eval-batches", metavar="N", type=int, default=S,
                   help=f"fixed validation batches (default {d['eval_batches']})")
    g.add_argument("--log-interval", metavar="N", type=int, default=S,
                   help=f"log the training loss every N steps (default {d['log_interval']})")
    g.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=S,
                   help="auto (default): bf16 where supported, fp16 on older GPUs, else fp32")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=S,
                   help=f"torch.compile the training step (default: when the run has --minutes {COMPILE_MINUTES:g} or "
                   f"more, or {COMPILE_STEPS} steps or more, which repays its warm-up of about a minute; "
                   "--no-compile: never)")  # fmt: skip
    add_threads_argument(g)
    g.add_argument("--seed", type=int, default=S, help=f"of the initial weights and data order (default {d['seed']})")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last/ (its settings, except those given)")
    g.add_argument("--overwrite", action="store_true", help="start a new run over the one already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    add_model_arguments(p)
    add_train_arguments(p)
    p.add_argument("--engine", choices=("torch", "numpy"), default="torch",
                   help="torch (default), or numpy: the hand-written NumPy trainer (CPU, fp32, one process); "
                   "same checkpoints, either engine resumes the other's run")  # fmt: skip


MODEL_KEYS = ("preset", "family", "n_layers", "dim", "n_heads", "n_kv_heads", "context_length", "dropout")


def run(args: argparse.Namespace) -> None:
    from tinylm.threads import use_threads

    use_threads(args.threads)
    from tinylm.train.session import run_training

    given = vars(args)
    model_args = {k: given[k] for k in MODEL_KEYS if k in given}
    skip = (*MODEL_KEYS, "init", "resume", "overwrite", "quiet", "engine", "threads", "command", "_run")
    train_args = {k: v for k, v in given.items() if k not in skip}
    run_training(train_args, model_args, init=given.get("init"), resume=args.resume, quiet=args.quiet,
                 engine=args.engine, overwrite=args.overwrite)  # fmt: skip
