"""`tinylm task`: small tasks on the same trainer (minGPT's addition, character-level language modelling)."""

from __future__ import annotations

import argparse

NAME = "task"
ORDER = 45
HELP = "Small tasks: n-digit addition (minGPT), character-level language modelling, story-words instructions."
EXAMPLES = """
  tinylm task addition                        # 2-digit addition until all 10,000 sums are right
  tinylm task addition --digits 3 --steps 8000 --out runs/add3
  tinylm task charlm --data input.txt         # nanoGPT's baby Shakespeare settings, then samples
  tinylm task charlm --data input.txt --layers 6 --dim 384 --heads 6 --context 256 --steps 5000
  tinylm task story-words --stories tinystories --out data/sw    # instruction data for `tinylm finetune`
  tinylm task story-words --score runs/sw-lora/best --test data/sw/test.jsonl
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tinylm.commands.train import add_model_arguments, add_train_arguments
    from tinylm.train.tasks import (
        ADDITION_SETTINGS,
        ADDITION_SHAPE,
        CHARLM_SETTINGS,
        CHARLM_SHAPE,
        STORY_WORDS_SHARES,
    )

    sub = p.add_subparsers(dest="task", metavar="<task>", required=True)
    add = sub.add_parser("addition", help="a + b with n-digit operands; exact match over every pair",
                         description="Train until every n-digit sum is right (greedy decoding, all pairs).")  # fmt: skip
    add.add_argument("--digits", type=int, default=2, help="operand digits (default 2: 10,000 pairs)")
    char = sub.add_parser("charlm", help="character-level language model on a text file",
                          description="Train a character-level model on a text file (90/10 split), then sample.")  # fmt: skip
    char.add_argument("--data", required=True, help="a UTF-8 text file")
    char.add_argument("--prompt", default="\n", help="start of the printed samples")
    sw = sub.add_parser("story-words", help="'write a story that uses the words X, Y and Z' data, and its metric",
                        description="Write train.jsonl/test.jsonl of story-words examples from TinyStories, or "
                        "score a checkpoint: the share of test prompts whose greedy story uses every word, and the "
                        "share of requested words it uses (each ± its binomial standard error). The words of a "
                        "prompt come from its story and are common ones: found in at least --min-share and at most "
                        "--max-share of the training stories (a small model can spell them; a word nearly every "
                        "story has, like 'once' or 'day', would be used without reading the prompt).")  # fmt: skip
    sw.add_argument("--stories", default="tinystories", help="a text file of stories (<|endoftext|>-separated) or "
                    "tinystories (downloaded once; default)")  # fmt: skip
    sw.add_argument("--out", help="directory for train.jsonl and test.jsonl")
    sw.add_argument("--train", type=int, default=20000, help="stories for training examples (default 20000; one without enough words makes none)")
    sw.add_argument("--test", type=int, default=200, help="stories for held-out examples, read first (default 200)")
    sw.add_argument("--words", type=int, default=3, help="words per prompt (default 3)")
    lo, hi = STORY_WORDS_SHARES
    sw.add_argument("--min-share", type=float, default=lo, help=f"least share of training stories a requested "
                    f"word is in (default {lo})")  # fmt: skip
    sw.add_argument("--max-share", type=float, default=hi, help=f"greatest share of training stories a requested "
                    f"word is in (default {hi})")  # fmt: skip
    sw.add_argument("--score", metavar="CKPT", help="instead: score this checkpoint on --test-file")
    sw.add_argument("--test-file", metavar="JSONL", help="test.jsonl written by this command (with --score)")
    sw.add_argument("--seed", type=int, default=1337)
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

    if args.task == "story-words":
        return _story_words(args)
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


def _story_words(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinylm.errors import TinyLMError
    from tinylm.train.tasks import story_words

    if args.score:
        from tinylm.checkpoint import load_checkpoint
        from tinylm.train.instruct import read_jsonl

        if not args.test_file:
            raise TinyLMError("--score needs --test-file (the test.jsonl of `tinylm task story-words --out`)")
        ckpt = load_checkpoint(args.score)
        if ckpt.tokenizer is None:
            raise TinyLMError(f"{args.score}: no tokenizer in the checkpoint")
        records = read_jsonl(args.test_file)[: args.test]
        print(f"story-words: {story_words.words_rate(ckpt.model, ckpt.tokenizer, records)}")
        return
    if not args.out:
        raise TinyLMError("give --out DIR for train.jsonl and test.jsonl (or --score CKPT --test-file FILE)")
    n_train, n_test = story_words.write_task(args.stories, Path(args.out), args.train, args.test, args.words, args.seed,
                                             args.min_share, args.max_share)
    print(f"wrote {n_train:,} training and {n_test:,} test examples to {args.out}/train.jsonl and test.jsonl")
