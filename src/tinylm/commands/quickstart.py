"""`tinylm quickstart`: the first thing to run. Offline: prepare a built-in corpus, train a small model
for a few minutes, write the checkpoint and loss plot, print samples."""

from __future__ import annotations

import argparse

NAME = "quickstart"
ORDER = 5
HELP = "Train a small model for a few minutes on a built-in corpus (offline) and print samples."
EXAMPLES = """
  tinylm quickstart                            # ~3 minutes on CPU; TinyStories if cached, else Python's stdlib
  tinylm quickstart --minutes 10 --out runs/qs10
  tinylm quickstart --dataset tinystories      # downloads the TinyStories validation file (~22 MB) once
"""
PROMPTS = {"pystdlib": ["def ", "import ", "class "], "tinystories": ["Once upon a time", "Lily and Tom"],
           "shakespeare": ["ROMEO:", "First Citizen:"]}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget (default 3)")
    p.add_argument("--dataset", choices=("pystdlib", "tinystories", "shakespeare"), default=None,
                   help="default: tinystories when it is already downloaded, else pystdlib (no download)")  # fmt: skip
    p.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")


def default_dataset() -> str:
    from tinylm.data.download import REMOTES, cache_dir

    return "tinystories" if (cache_dir() / REMOTES["tinystories"].filename).is_file() else "pystdlib"


def run(args: argparse.Namespace) -> None:
    from tinylm.train.samples import print_samples
    from tinylm.train.session import run_training

    dataset = args.dataset or default_dataset()
    print(f"tinylm quickstart: {dataset}, {args.minutes:g} minutes of training -> {args.out}")
    settings = {"out_dir": args.out, "data": dataset, "minutes": args.minutes, "device": args.device,
                "compile": args.compile, "batch_size": 16, "lr": 2e-3, "schedule": "wsd", "decay_frac": 0.3,
                "warmup_steps": 50, "eval_interval": 100, "eval_batches": 8, "vocab_size": 2048}  # fmt: skip
    model = {"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 256}
    result = run_training(settings, model, quiet=args.quiet, overwrite=args.overwrite)
    print_samples(result.model.cpu(), result.tokenizer, PROMPTS[dataset], max_new_tokens=80)
    print(f"\nnext: tinylm sample {args.out}/best \"{PROMPTS[dataset][0]}\"  |  plot: {args.out}/loss.png  |  "
          f"bigger: tinylm train --data {dataset} --minutes 30 --layers 6 --dim 256 --heads 8 --out runs/bigger")  # fmt: skip

