"""Does `tinylm plan --minutes M` give good advice? Train its choice and the two shapes beside it on the plan's
ladder (one smaller and one larger; the two nearest when it chose an end) for the same M minutes each, on the same data, and compare their held-out loss
(the trainer's validation loss: the same fixed validation batches for all three, same tokenizer and context).
The plan's advice holds if its choice reaches the lowest.

The runs are sequential, so a change in machine load between them changes what each could train: read the
tokens column, and repeat on a quiet machine before trusting a close call.

python benchmarks/bench_plan.py                         # pydocs (the quick start's data), 3 minutes each
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
    from tinylm.plan import candidates, fit_budget
    from tinylm.train.metrics import human
    from tinylm.train.session import run_training

    cands = candidates(args.vocab_size, args.context)
    print(f"plan: measuring candidates ({threads} thread(s), batch {args.batch_size} x {args.context}) ...")
    chosen = fit_budget(cands, args.minutes * 60, args.batch_size, "cpu", "auto")
    i = cands.index(chosen)
    start = max(0, min(i - 1, len(cands) - 3))  # the choice and its neighbours, three in all at the ends too
    trio = cands[start : start + 3]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in trio:
            m = c.config
            settings = {"out_dir": str(Path(tmp) / c.name), "data": args.data, "vocab_size": args.vocab_size,
                        "minutes": args.minutes, "batch_size": args.batch_size}  # fmt: skip
            model = {"family": m.family, "n_layers": m.n_layers, "dim": m.dim, "n_heads": m.n_heads,
                     "context_length": args.context}  # fmt: skip
            print(f"training {c.name} ({human(c.params)} params) for {args.minutes:g} minutes ...", flush=True)
            r = run_training(settings, model, quiet=True)
            results.append((c, r.progress.best_val_loss, r.progress.step, r.progress.tokens))
    print(f"\n{'shape':<14}{'params':>8}{'steps':>8}{'tokens':>9}{'held-out loss':>15}")
    for c, loss, steps, tokens in results:
        mark = "  <- plan's choice" if c is chosen else ""
        print(f"{c.name:<14}{human(c.params):>8}{steps:>8,}{human(tokens):>9}{loss:>15.4f}{mark}")
    best = min(results, key=lambda r: r[1])[0]
    verdict = "yes" if best is chosen else f"no: {best.name} reached a lower loss"
    print(f"\nthe plan's choice reached the lowest held-out loss of the three: {verdict}")


if __name__ == "__main__":
    main()
