"""`tinylm plot`: compare the loss curves of training runs in one picture."""

from __future__ import annotations

import argparse

NAME = "plot"
ORDER = 42
HELP = "Plot the training and validation loss (and learning rate) of one or more runs against tokens seen."
EXAMPLES = """
  tinylm plot runs/quickstart                         # writes runs/quickstart/compare.png
  tinylm plot runs/a runs/b runs/c --out abc.png      # three runs, one colour each
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or their metrics.jsonl) written by training")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the PNG to write (default: compare.png in the first run's directory)")  # fmt: skip
    p.add_argument("--title", default="", help="a title above the plot")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinylm.errors import TinyLMError
    from tinylm.train.plot import plot_runs, read_run

    runs = [read_run(r) for r in args.runs]
    first = Path(args.runs[0])
    out = Path(args.out) if args.out else (first.parent if first.is_file() else first) / "compare.png"
    try:
        plot_runs(runs, out, args.title)
    except OSError as e:
        raise TinyLMError(f"cannot write {out} ({e.strerror}); choose another --out") from None
    print(f"wrote {out} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
