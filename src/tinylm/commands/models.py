"""`tinylm models`: the named model presets and their sizes."""

from __future__ import annotations

import argparse

NAME = "models"
ORDER = 10
HELP = "List the model presets (GPT-2 and llama2.c TinyStories shapes) with their parameter counts."
EXAMPLES = """
  tinylm models
  tinylm models --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the full configs as JSON")


def run(args: argparse.Namespace) -> None:
    import json

    from tinylm.config import PRESETS

    if args.json:
        print(json.dumps({name: cfg.to_dict() for name, cfg in PRESETS.items()}, indent=2))
        return
    cols = ("name", "family", "layers", "dim", "heads", "kv heads", "vocab", "context", "params")
    rows = [
        (name, c.family, c.n_layers, c.dim, c.n_heads, c.kv_heads, c.vocab_size, c.context_length, _human(c.num_params()))
        for name, c in PRESETS.items()
    ]
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    for r in [cols, *rows]:
        print("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))


def _human(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
