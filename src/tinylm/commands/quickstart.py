"""`tinylm quickstart`: the first thing to run. Offline: prepare a built-in corpus, train a small model
for a few minutes, write the checkpoint and loss plot, print samples."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument

NAME = "quickstart"
ORDER = 5
HELP = "Train a small model for a few minutes on a built-in corpus (offline) and print samples."
EXAMPLES = """
  tinylm quickstart                            # ~3 minutes on CPU; TinyStories if cached, else Python's help text
  tinylm quickstart --minutes 10 --out runs/qs10
  tinylm quickstart --dataset tinystories      # downloads the TinyStories validation file (~22 MB) once
"""
PROMPTS = {"pydocs": ["The ", "When an object", "This is"], "pystdlib": ["def ", "import ", "class "],
           "tinystories": ["Once upon a time", "Lily and Tom"], "shakespeare": ["ROMEO:", "First Citizen:"]}  # fmt: skip
VOCAB = 1024  # a small corpus: a small vocabulary keeps more tokens to learn from and a smaller embedding
EVAL_TOKENS = 50_000  # held-out tokens scored for bits per byte


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget (default 3)")
    p.add_argument("--dataset", choices=tuple(PROMPTS), default=None,
                   help="default: tinystories when it is already downloaded, else pydocs: the English help text "
                   "inside this Python (no download)")  # fmt: skip
    p.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (slow start, faster steps; default: for --minutes 5 or more)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")


def default_dataset() -> str:
    from tinylm.data.download import REMOTES, cache_dir

    return "tinystories" if (cache_dir() / REMOTES["tinystories"].filename).is_file() else "pydocs"


def run(args: argparse.Namespace) -> None:
    from tinylm.threads import use_threads

    use_threads(args.threads)
    from tinylm.train.samples import print_samples
    from tinylm.train.session import run_training

    dataset = args.dataset or default_dataset()
    print(f"tinylm quickstart: {dataset}, {args.minutes:g} minutes of training -> {args.out}")
    settings = {"out_dir": args.out, "data": dataset, "minutes": args.minutes, "device": args.device,
                "compile": args.compile, "batch_size": 16, "lr": 2e-3, "schedule": "wsd", "decay_frac": 0.3,
                "eval_batches": 8, "vocab_size": VOCAB}  # fmt: skip
    model = {"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 128, "dropout": 0.2}
    result = run_training(settings, model, quiet=args.quiet, overwrite=args.overwrite)
    print_samples(result.model.cpu(), result.tokenizer, PROMPTS[dataset], max_new_tokens=80)
    print(f"\nheld-out bits per byte: {_bits_per_byte(result, dataset, args):.3f} (lower is better; 8 = no model)")
    print(f"\nnext: tinylm sample {args.out}/best \"{PROMPTS[dataset][0]}\"  |  plot: {args.out}/loss.png  |  "
          f"bigger: tinylm train --data {dataset} --minutes 30 --layers 6 --dim 256 --heads 8 --out runs/bigger")  # fmt: skip



def _bits_per_byte(result, dataset: str, args: argparse.Namespace) -> float:
    """Scored with `tinylm eval` on the first tokens of the validation split the run never trained on."""
    from tinylm.eval import evaluate_models
    from tinylm.train.data import prepared_dir

    where, _ = prepared_dir(dataset, args.out, "bpe", VOCAB)
    scores = evaluate_models([(result.model, result.tokenizer)], where, max_tokens=EVAL_TOKENS, progress=not args.quiet)
    return scores[0].bits_per_byte
