"""`tinylm finetune`: LoRA, QLoRA or full fine-tuning of a checkpoint on chat/instruction JSONL."""

from __future__ import annotations

import argparse

NAME = "finetune"
ORDER = 42
HELP = "Fine-tune a checkpoint on chat/instruction data (.jsonl): LoRA, QLoRA (NF4 base) or full."
EXAMPLES = """
  tinylm task story-words --stories tinystories --out data/sw          # train.jsonl + test.jsonl
  tinylm finetune runs/stories/best --data data/sw/train.jsonl --out runs/sw-lora
  tinylm finetune runs/stories/best --data data/sw/train.jsonl --words-test data/sw/test.jsonl --out runs/sw
  tinylm finetune runs/stories/best --data chat.jsonl --method qlora --rank 16 --targets q,v --out runs/q
  tinylm finetune runs/stories/best --data chat.jsonl --method full --lr 1e-4 --steps 500 --out runs/full
  tinylm finetune runs/stories/best --data chat.jsonl --out runs/sw-lora --resume --steps 600
  tinylm sample runs/sw-lora/best --prompt "..."      # an adapter loads on top of its base everywhere
  tinylm merge runs/sw-lora/best --out runs/sw-merged  # a plain checkpoint with the adapter merged in
A line of the .jsonl is {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
or {"prompt": "...", "completion": "..."}; the loss is taken on the assistant's replies only.
Fine-tuning defaults (not train's): --steps 300, --batch-size 8, --warmup-steps 20, --eval-interval 50,
--eval-batches 10, --lr 2e-3 without weight decay (lora, qlora) or 2e-4 (full), --out runs/finetune.
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    from tinylm.commands.train import add_train_arguments

    p.add_argument("base", help="the checkpoint to start from (with its tokenizer)")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--data", required=True, help="a .jsonl file of conversations or prompt/completion pairs")
    g.add_argument("--method", choices=("lora", "qlora", "full"), default="lora",
                   help="lora (default): frozen base + low-rank updates; qlora: the same over an NF4 base; full")  # fmt: skip
    g.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    g.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha; updates are scaled by alpha/r (default 16)")
    g.add_argument("--lora-dropout", dest="dropout", type=float, default=0.0, help="dropout on the LoRA input (default 0)")
    g.add_argument("--targets", default="all", help="layers to adapt: q,k,v,o,gate,up,down,head or the presets "
                   "attn, mlp, all (default all: every block Linear, plus an untied head)")  # fmt: skip
    g.add_argument("--on-error", choices=("stop", "skip"), default="stop", help="malformed lines: stop at the first "
                   "(default) or skip them, listing their line numbers")  # fmt: skip
    g.add_argument("--too-long", choices=("drop", "truncate"), default="drop",
                   help="conversations longer than the context: drop (default) or keep their start")  # fmt: skip
    g.add_argument("--val-frac", type=float, default=0.05, help="share held out for validation loss (default 0.05)")
    g.add_argument("--words-test", metavar="JSONL", help="story-words test prompts: score the words-satisfied rate "
                   "at every evaluation (slow: it generates)")  # fmt: skip
    g.add_argument("--words-n", type=int, default=32, help="how many of those prompts (default 32)")
    add_train_arguments(p)


def run(args: argparse.Namespace) -> None:
    from tinylm.threads import use_threads
    from tinylm.train.finetune import Options, run_finetune

    given = vars(args)
    opt_keys = ("base", "data", "method", "rank", "alpha", "dropout", "targets", "on_error", "too_long", "val_frac",
                "words_test", "words_n")  # fmt: skip
    opts = Options(**{k: given[k] for k in opt_keys})
    use_threads(args.threads)
    skip = (*opt_keys, "resume", "overwrite", "quiet", "threads", "command", "_run")
    train_args = {k: v for k, v in given.items() if k not in skip}
    result = run_finetune(opts, train_args, resume=args.resume, quiet=args.quiet, overwrite=args.overwrite)
    if result.metrics.get("words_rate") is not None and not args.quiet:
        m = result.metrics
        print(f"story-words: {m['words_rate']:.1%} of {opts.words_n} held-out prompts use every word, "
              f"{m['words_word_rate']:.1%} of their words are used")  # fmt: skip
