"""`tinylm task`: small tasks on the same trainer (minGPT's addition, character-level language modelling)."""

from __future__ import annotations

import argparse

NAME = "task"
ORDER = 45
HELP = "Small tasks on the trainer: n-digit addition (minGPT) and character-level language modelling."
EXAMPLES = """
  tinylm task addition                        # 2-digit addition until all 10,000 sums are right
  tinylm task addition --digits 3 --steps 8000 --out runs/add3
  tinylm task charlm --data input.txt         # nanoGPT's baby Shakespeare settings, then samples
  tinylm task charlm --data input.txt --layers 6 --dim 384 --heads 6 --context 256 --steps 5000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tinylm.commands.train import add_model_arguments, add_train_arguments

    sub = p.add_subparsers(dest="task", metavar="<task>", required=True)
    add = sub.add_parser("addition", help="a + b with n-digit operands; exact match over every pair",
                         description="Train until every n-digit sum is right (greedy decoding, all pairs).")  # fmt: skip
    add.add_argument("--digits", type=int, default=2, help="operand digits (default 2: 10,000 pairs)")
    char = sub.add_parser("charlm", help="character-level language model on a text file",
                          description="Train a character-level model on a text file (90/10 split), then sample.")  # fmt: skip
    char.add_argument("--data", required=True, help="a UTF-8 text file")
    char.add_argument("--prompt", default="\n", help="start of the printed samples")
    add_model_arguments(add, "gpt2, 2 layers, dim 64, 4 heads", skip=("preset", "context", "init"))
    add_model_arguments(char, "gpt2, 4 layers, dim 128, 4 heads, context 64", skip=("preset", "init"))
    for q in (add, char):
        add_train_arguments(q)


def run(args: argparse.Namespace) -> None:
    from tinylm.commands.train import MODEL_KEYS

    given = vars(args)
    model_args = {k: given[k] for k in MODEL_KEYS if k in given}
    skip = {*MODEL_KEYS, "resume", "overwrite", "quiet", "command", "task", "_run", "digits", "data", "prompt"}
    train_args = {k: v for k, v in given.items() if k not in skip}
    if args.task == "addition":
        _addition(args, model_args, train_args)
    else:
        _charlm(args, model_args, train_args)


def _addition(args: argparse.Namespace, model_args: dict, train_args: dict) -> None:
    import time

    from tinylm.errors import TinyLMError
    from tinylm.train.tasks.addition import train_addition

    if not 1 <= args.digits <= 4:
        raise TinyLMError(f"--digits must be 1 to 4 (10^(2n) pairs are all checked), not {args.digits}")
    out = train_args.pop("out_dir", f"runs/addition{args.digits}")
    t0 = time.perf_counter()
    _, score, held = train_addition(args.digits, out, quiet=args.quiet, model_args=model_args, resume=args.resume,
                                    overwrite=args.overwrite, **train_args)  # fmt: skip
    print(f"exact match: {score.correct:,}/{score.total:,} ({score.accuracy:.2%}) of all {args.digits}-digit sums; "
          f"held-out {held.correct}/{held.total}; {time.perf_counter() - t0:.0f}s")  # fmt: skip
    for a, b, guess in score.wrong:
        print(f"  wrong: {a} + {b} = {a + b}, model says {guess}")


def _charlm(args: argparse.Namespace, model_args: dict, train_args: dict) -> None:
    from tinylm.train import TrainConfig, train
    from tinylm.train.samples import print_samples
    from tinylm.train.shapes import build_config
    from tinylm.train.tasks.charlm import char_data

    # nanoGPT's CPU Shakespeare settings (and its exact GELU) unless told otherwise
    shape = {"family": "gpt2", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 64, "gelu": "exact",
             **model_args}  # fmt: skip
    settings = {"out_dir": "runs/charlm", "batch_size": 12, "max_steps": 2000, "lr": 1e-3, "min_lr": 1e-4,
                "beta2": 0.99, "warmup_steps": 100, "eval_interval": 250, **train_args}  # fmt: skip
    data = char_data(args.data, shape["context_length"])
    cfg = TrainConfig(data=args.data, **settings)
    result = train(cfg, data, build_config(data.tokenizer.vocab_size, **shape), resume=args.resume,  # type: ignore[union-attr]
                   quiet=args.quiet, overwrite=args.overwrite)  # fmt: skip
    print_samples(result.model, data.tokenizer, [args.prompt] * 2, max_new_tokens=200)
