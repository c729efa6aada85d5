"""minGPT's 2-digit addition to 100%: train until every one of the 10,000 sums is right (greedy decoding,
checked at each evaluation), and report the time it took.

python benchmarks/bench_addition.py
python benchmarks/bench_addition.py --digits 3 --steps 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from tinylm.train.tasks.addition import train_addition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3000, help="at most this many steps")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result, score, held = train_addition(args.digits, out, quiet=True, max_steps=args.steps, seed=args.seed,
                                             device=args.device)  # fmt: skip
    seconds = time.perf_counter() - t0
    p = result.progress
    print("| task | params | steps | examples seen | exact match (all pairs) | held-out | time | device |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {args.digits}-digit addition | {result.model.num_params():,} | {p.step:,} | "
          f"{p.tokens // (3 * args.digits):,} | {score.correct:,}/{score.total:,} ({score.accuracy:.2%}) | "
          f"{held.correct}/{held.total} | {seconds:.0f}s | {args.device}, {torch.get_num_threads()} threads |")  # fmt: skip
    for a, b, guess in score.wrong:
        print(f"  wrong: {a} + {b} = {a + b}, model says {guess}")


if __name__ == "__main__":
    main()
