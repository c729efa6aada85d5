"""`tinylm train`: train a GPT-2 or Llama 2 model from a text file, prepared shards or a named dataset."""

from __future__ import annotations

import argparse

NAME = "train"
ORDER = 40
HELP = "Train a model (GPT-2 or Llama 2 shape) on a text file, prepared shards or a named dataset."
EXAMPLES = """
  tinylm train --data story.txt --out runs/story                 # prepare the file (BPE 4096), train the default model
  tinylm train --data data/tinystories --preset stories260K --steps 5000 --out runs/s260k
  tinylm train --data pystdlib --minutes 10 --family gpt2 --layers 6 --dim 192 --heads 6
  tinylm train --data data/ts --batch-size 16 --batch-tokens 65536 --schedule wsd --compile
  tinylm train --out runs/s260k --resume --steps 8000           # continue (here: longer) where it stopped
  torchrun --nproc-per-node 2 -m tinylm train --data data/ts --out runs/ddp   # data parallel
  tinylm train --data data/ts --preset stories260K --engine numpy --out runs/np   # no PyTorch: NumPy backward
"""
S = argparse.SUPPRESS  # options not given stay unset, so --resume knows what was asked to change


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="SPEC", default=S, help="text file, `tinylm prepare` output directory, or dataset name "
                   "(pystdlib, tinystories, shakespeare)")  # fmt: skip
    g.add_argument("--tokenizer", metavar="KIND", default=S, help="when preparing: bpe, sentencepiece, char, llama2, gpt2 or a "
                   "tokenizer path (default: bpe)")  # fmt: skip
    g.add_argument("--vocab-size", metavar="N", type=int, default=S, help="when training a tokenizer (default: 4096)")


def add_model_arguments(p: argparse.ArgumentParser, title: str = "llama, 4 layers, dim 128, 4 heads, context 256",
                        skip: tuple[str, ...] = ()) -> None:  # fmt: skip
    g = p.add_argument_group(f"model (default: {title})")
    if "preset" not in skip:
        g.add_argument("--preset", metavar="NAME", default=S, help="a named shape (see `tinylm models`); the vocabulary follows the data")
    g.add_argument("--family", choices=("llama", "gpt2"), default=S, help="architecture for a custom shape")
    g.add_argument("--layers", dest="n_layers", metavar="N", type=int, default=S)
    g.add_argument("--dim", type=int, default=S)
    g.add_argument("--heads", dest="n_heads", metavar="N", type=int, default=S)
    g.add_argument("--kv-heads", dest="n_kv_heads", metavar="N", type=int, default=S, help="fewer than --heads: grouped-query")
    if "context" not in skip:
        g.add_argument("--context", dest="context_length", metavar="T", type=int, default=S, help="tokens per training sequence")
    g.add_argument("--dropout", type=float, default=S)
    if "init" not in skip:
        g.add_argument("--init", metavar="CKPT", default=S, help="start from this checkpoint's weights (fine-tuning)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults from TrainConfig)")
    g.add_argument("--out", dest="out_dir", metavar="DIR", default=S, help="run directory: last/, best/, metrics.jsonl, loss.png")
    g.add_argument("--steps", dest="max_steps", metavar="N", type=int, default=S, help="optimizer steps (default 1000)")
    g.add_argument("--minutes", type=float, default=S, help="train for this long instead: steps are fitted to it")
    g.add_argument("--batch-size", metavar="B", type=int, default=S, help="sequences per forward pass and process (default 16)")
    g.add_argument("--batch-tokens", metavar="N", type=int, default=S, help="tokens per optimizer step, by gradient accumulation")
    g.add_argument("--lr", type=float, default=S, help="peak learning rate (default 1e-3)")
    g.add_argument("--min-lr", type=float, default=S, help="final learning rate (default lr/10)")
    g.add_argument("--schedule", choices=("cosine", "wsd", "constant"), default=S, help="after warmup (default cosine)")
    g.add_argument("--warmup-steps", metavar="N", type=int, default=S, help="(default 100)")
    g.add_argument("--decay-frac", type=float, default=S, help="wsd: share of steps spent decaying (default 0.2)")
    g.add_argument("--weight-decay", type=float, default=S, help="on matrices only (default 0.1)")
    g.add_argument("--beta2", type=float, default=S, help="AdamW beta2 (default 0.95)")
    g.add_argument("--grad-clip", type=float, default=S, help="max gradient norm, 0 for none (default 1.0)")
    g.add_argument("--eval-interval", metavar="N", type=int, default=S, help="evaluate and checkpoint every N steps (default 200)")
    g.add_argument("--eval-batches", metavar="N", type=int, default=S, help="fixed validation batches (default 20)")
    g.add_argument("--log-interval", metavar="N", type=int, default=S, help="(default 10)")
    g.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=S,
                   help="auto: bf16 where supported, fp16 on older GPUs, else fp32")  # fmt: skip
    g.add_argument("--compile", action="store_const", const=True, default=S, help="torch.compile the model")
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last/")
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
    from tinylm.train.session import run_training

    given = vars(args)
    model_args = {k: given[k] for k in MODEL_KEYS if k in given}
    skip = (*MODEL_KEYS, "init", "resume", "overwrite", "quiet", "engine", "command", "_run")
    train_args = {k: v for k, v in given.items() if k not in skip}
    run_training(train_args, model_args, init=given.get("init"), resume=args.resume, quiet=args.quiet,
                 engine=args.engine, overwrite=args.overwrite)  # fmt: skip
