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
    from tinylm.train.tasks import ADDITION_SETTINGS, ADDITION_SHAPE, CHARLM_SETTINGS, CHARLM_SHAPE

    sub = p.add_subparsers(dest="task", metavar="<task>", required=True)
    add = sub.add_parser("addition", help="a + b with n-digit operands; exact match over every pair",
                         description="Train until every n-digit sum is right (greedy decoding, all pairs).")  # fmt: skip
    add.add_argument("--digits", type=int, default=2, help="operand digits (default 2: 10,000 pairs)")
    char = sub.add_parser("charlm", help="character-level language model on a text file",
                          description="Train a character-level model on a text file (90/10 split), then sample.")  # fmt: skip
    char.add_argument("--data", required=True, help="a UTF-8 text file")
    char.add_argument("--prompt", default="\n", help="start of the printed samples")
    add_model_arguments(add, _shape(ADDITION_SHAPE), skip=("preset", "context", "init"))
    add_model_arguments(char, _shape(CHARLM_SHAPE), skip=("preset", "init"))
    add_train_arguments(add, {**ADDITION_SETTINGS, "out_dir": "runs/addition<digits>"})
    add_train_arguments(char, CHARLM_SETTINGS)


def _shape(s: dict) -> str:
    context = f", context {s['context_length']}" if "context_length" in s else ""
    return f"{s['family']}, {s['n_layers']} layers, dim {s['dim']}, {s['n_heads']} heads{context}"


def run(args: argparse.Namespace) -> None:
    from tinylm.commands.train import MODEL_KEYS
    from tinylm.threads import use_threads

    use_threads(args.threads)
    given = vars(args)
    model_args = {k: given[k] for k in MODEL_KEYS if k in given}
    skip = {*MODEL_KEYS, "resume", "overwrite", "quiet", "threads", "command", "task", "_run", "digits", "data", "prompt"}
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
    from tinylm.train.tasks import CHARLM_SETTINGS, CHARLM_SHAPE
    from tinylm.train.tasks.charlm import char_data

    shape = {**CHARLM_SHAPE, **model_args}
    settings = {**CHARLM_SETTINGS, **train_args}
    data = char_data(args.data, shape["context_length"])
    cfg = TrainConfig(data=args.data, **settings)
    result = train(cfg, data, build_config(data.tokenizer.vocab_size, **shape), resume=args.resume,  # type: ignore[union-attr]
                   quiet=args.quiet, overwrite=args.overwrite)  # fmt: skip
    print_samples(result.model, data.tokenizer, [args.prompt] * 2, max_new_tokens=200)
