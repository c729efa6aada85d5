"""Does `tinylm plan --minutes M` give good advice? Train its choice and the two shapes beside it on the plan's
ladder (one smaller and one larger; the two nearest when it chose an end) on the same data, and compare their
held-out loss (the trainer's validation loss: the same fixed validation batches for all three, same tokenizer
and context). The plan's advice holds if its choice reaches the lowest.

Each shape trains for the tokens the plan measured it would reach in M minutes here (tokens/s x M), as a fixed
number of steps, so a change in machine load during the (sequential) runs does not change what each trains on:
only the plan's own measurement depends on the load, as it would for a user. Training settings are the quick
start's (lr 2e-3, WSD, dropout 0.2, batch 16, BPE 1024, context 128).

python benchmarks/bench_plan.py --threads 1                 # pydocs (the quick start's data), 3 minutes each
python benchmarks/bench_plan.py --minutes 10 --data tinystories --vocab-size 4096 --context 256
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0, help="training budget of each run (default 3)")
    p.add_argument("--data", default="pydocs", help="dataset name, text file or prepared folder (default pydocs)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary (default 1024, the quick start's)")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="as tinylm's --threads (default: idle cores)")
    args = p.parse_args()
    from tinylm.threads import use_threads

    threads = use_threads(args.threads)
    from tinylm.data.shards import Manifest
    from tinylm.plan import candidates, fit_budget
    from tinylm.train.data import prepare_data, prepared_dir
    from tinylm.train.metrics import human
    from tinylm.train.session import run_training

    with tempfile.TemporaryDirectory() as tmp:
        where, todo = prepared_dir(args.data, tmp, "bpe", args.vocab_size)
        if todo:
            prepare_data(args.data, where, "bpe", args.vocab_size, progress=True)
        unique = Manifest.load(where).raw["splits"]["train"]["tokens"]
        cands = candidates(args.vocab_size, args.context)
        print(f"plan: measuring candidates ({threads} thread(s), batch {args.batch_size} x {args.context}, "
              f"{human(unique)} distinct training tokens) ...")  # fmt: skip
        chosen = fit_budget(cands, args.minutes * 60, args.batch_size, "cpu", "auto", unique=unique)
        i = cands.index(chosen)
        start = max(0, min(i - 1, len(cands) - 3))  # the choice and its neighbours, three in all at the ends too
        trio = [c for c in cands[start : start + 3] if c.tokens_per_s]
        results = []
        for c in trio:
            m = c.config
            steps = max(1, int(c.tokens_per_s * args.minutes * 60) // (args.batch_size * args.context))  # type: ignore[operator]
            settings = {"out_dir": str(Path(tmp) / c.name), "data": str(where), "max_steps": steps,
                        "batch_size": args.batch_size, "lr": 2e-3, "schedule": "wsd", "decay_frac": 0.3,
                        "eval_batches": 8, "compile": False}  # fmt: skip
            model = {"family": m.family, "n_layers": m.n_layers, "dim": m.dim, "n_heads": m.n_heads,
                     "context_length": args.context, "dropout": 0.2}  # fmt: skip
            print(f"training {c.name} ({human(c.params)} params) for {steps:,} steps ...", flush=True)
            r = run_training(settings, model)  # the trainer's own progress bar
            results.append((c, r.progress.best_val_loss, steps, r.progress.tokens))
    print(f"\n{'shape':<14}{'params':>8}{'tokens/s':>10}{'steps':>8}{'tokens':>9}{'tok/param':>10}"
          f"{'predicted':>11}{'held-out loss':>15}")  # fmt: skip
    for c, loss, steps, tokens in results:
        mark = "  <- plan's choice" if c is chosen else ""
        print(f"{c.name:<14}{human(c.params):>8}{human(c.tokens_per_s):>10}{steps:>8,}{human(tokens):>9}"
              f"{tokens / c.params:>10.1f}{c.loss:>11.3f}{loss:>15.4f}{mark}")  # fmt: skip
    best = min(results, key=lambda r: r[1])[0]
    verdict = "yes" if best is chosen else f"no: {best.name} reached a lower loss"
    print(f"\nthe plan's choice reached the lowest held-out loss of the three: {verdict}")


if __name__ == "__main__":
    main()
