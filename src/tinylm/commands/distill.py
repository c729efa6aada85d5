"""`tinylm distill`: train a small model (the student) on a big one's (the teacher's) predictions."""

from __future__ import annotations

import argparse

from tinylm.commands.train import MODEL_KEYS, S, add_data_arguments, add_model_arguments, add_train_arguments

NAME = "distill"
ORDER = 45
HELP = "Distill: train a small student model on a big teacher's next-token distributions (and the text)."
EXAMPLES = """
  tinylm distill --teacher runs/big/best --student stories260K --data story.txt --out runs/small
  tinylm distill --teacher runs/big/best --layers 2 --dim 64 --heads 4 --data data/ts --minutes 10 --out runs/s
  tinylm distill --teacher runs/big/best --data data/ts --cache-teacher cache/big-ts --top-k 32 --out runs/s2
  tinylm distill --teacher runs/big/best --data data/ts --alpha 0.9 --temperature 1 --divergence reverse
  tinylm distill --out runs/small --resume --steps 4000          # continue with the saved teacher and settings
The text is tokenised with the teacher's tokenizer unless --tokenizer says otherwise (both must agree).
With --cache-teacher the teacher runs once over the training tokens (non-overlapping windows of --context)
and every later run with that directory reads its top-k logits instead of running it.
"""

DISTILL_KEYS = ("teacher", "cache", "alpha", "temperature", "divergence", "beta", "top_k")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", metavar="CKPT", default=S, help="the teacher: any checkpoint tinylm loads (trained, "
                   "imported, quantized, with adapters); required unless resuming")  # fmt: skip
    g.add_argument("--student", metavar="PRESET|CKPT", help="the student: a named shape (see `tinylm models`) or a "
                   "checkpoint to start from (default: the shape options below)")  # fmt: skip
    g.add_argument("--alpha", type=float, default=S, help="weight of the teacher's term, 0..1; 0 is plain training "
                   "(default 0.5)")  # fmt: skip
    g.add_argument("--temperature", type=float, default=S, help="softens both distributions; the term is scaled by "
                   "T^2 (default 2.0)")  # fmt: skip
    g.add_argument("--divergence", choices=("forward", "reverse", "jsd"), default=S,
                   help="forward KL(teacher||student), reverse KL(student||teacher) or generalized JSD (default forward)")  # fmt: skip
    g.add_argument("--jsd-beta", dest="beta", type=float, default=S,
                   help="jsd: the mixture's weight on the teacher (default 0.5)")  # fmt: skip
    g.add_argument("--cache-teacher", dest="cache", metavar="DIR", default=S, help="read the teacher's top-k logits "
                   "from DIR, writing them there first when it is new (default: run the teacher live)")  # fmt: skip
    g.add_argument("--top-k", dest="top_k", metavar="K", type=int, default=S, help="logits kept per position in a "
                   "new cache (default 64); the rest of the probability is spread evenly over the other tokens")  # fmt: skip
    add_data_arguments(p)
    add_model_arguments(p, title="the student: llama, 4 layers, dim 128, 4 heads, context 256", skip=("preset", "init"))
    add_train_arguments(p)


def run(args: argparse.Namespace) -> None:
    from tinylm.threads import use_threads

    use_threads(args.threads)
    from tinylm.distill.session import run_distill

    given = vars(args)
    model_args = {k: given[k] for k in MODEL_KEYS if k in given}
    distill_args = {k: given[k] for k in DISTILL_KEYS if k in given}
    skip = (*MODEL_KEYS, *DISTILL_KEYS, "student", "resume", "overwrite", "quiet", "threads", "command", "_run")
    train_args = {k: v for k, v in given.items() if k not in skip}
    run_distill(train_args, model_args, distill_args, student=args.student, resume=args.resume, quiet=args.quiet,
                overwrite=args.overwrite)  # fmt: skip
