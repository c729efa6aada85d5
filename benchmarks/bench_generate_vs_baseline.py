"""Decode speed of this checkout's engines against another checkout's, measured alternately.

Each round measures every (shape, engine, scheme) once with the baseline's code and once with this
one's, each in a fresh subprocess (see tinylm.generate.bench.measure_isolated), so both see the same
machine load; the table gives the range over rounds and the ratio of the medians.

    git worktree add /tmp/before 4d4e4f3
    python benchmarks/bench_generate_vs_baseline.py --baseline /tmp/before/src --rounds 3
    python benchmarks/bench_generate_vs_baseline.py --baseline /tmp/before/src --engines numpy,torch --schemes fp32,q8_0,q4_0
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tqdm import tqdm

from tinylm.generate.bench import measure_isolated


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the src/ folder of the checkout to compare against")
    p.add_argument("--shapes", default="stories15M,stories110M", help="presets, comma-separated")
    p.add_argument("--engines", default="torch,torch-compile", help="engines, comma-separated")
    p.add_argument("--schemes", default="fp32", help="quantization schemes, comma-separated (default fp32)")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--tokens", type=int, default=256, help="new tokens per decode run (default 256)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--repeats", type=int, default=1, help="decode runs per measurement, best counts (default 1)")
    args = p.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    jobs = [(s, e, q) for s in args.shapes.split(",") for e in args.engines.split(",") for q in args.schemes.split(",")]
    speeds: dict[tuple[str, str, str, str], list[float]] = {}
    runs = [(r, job, side) for r in range(args.rounds) for job in jobs for side in ("baseline", "this")]
    for _, (shape, engine, scheme), side in tqdm(runs, desc="bench", unit="run"):
        src = args.baseline if side == "baseline" else here
        res = measure_isolated(shape, engine, args.threads, args.tokens, 1, args.repeats, scheme, src=src)
        speeds.setdefault((shape, engine, scheme, side), []).append(res.decode_tok_s)
    print(f"decode tok/s, batch 1, {args.tokens} greedy tokens, {args.threads} threads, random weights; "
          f"min-max (median) over {args.rounds} alternating rounds")
    print(f"{'shape':<12} {'engine':<14} {'scheme':<7} {'baseline':>26} {'this':>26} {'ratio':>6}")
    for shape, engine, scheme in jobs:
        b, t = speeds[shape, engine, scheme, "baseline"], speeds[shape, engine, scheme, "this"]
        cell = [f"{min(x):,.1f}-{max(x):,.1f} ({statistics.median(x):,.1f})" for x in (b, t)]
        ratio = statistics.median(t) / statistics.median(b)
        print(f"{shape:<12} {engine:<14} {scheme:<7} {cell[0]:>26} {cell[1]:>26} {ratio:>5.2f}x")


if __name__ == "__main__":
    main()
