"""The NumPy runtime's decode token with and without its C step (tinylm.quantize.decode): the same
engine, the step switched on and off in turns within each round, so that both see the same load.

Batch 1, greedy, random weights of the given shapes; each round decodes `--tokens` tokens after a
one-token prompt with each path. Prints the fastest and the median round of each path in ms per token,
and their ratio (Python path / C step).

python benchmarks/bench_decode_step.py
python benchmarks/bench_decode_step.py --shapes stories110M --schemes q8_0 --threads 1 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tinylm.config import get_preset
from tinylm.generate.bench import build_engine, random_weights


def decode_ms(eng, tokens: int) -> float:
    """ms per token over `tokens` greedy decode steps after a one-token prompt (cache row 0)."""
    token = eng.prefill([0], [[1]]).argmax(-1)
    start = time.perf_counter()
    for _ in range(tokens):
        token = eng.decode([0], token).argmax(-1)
    return (time.perf_counter() - start) / tokens * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="stories15M,stories110M")
    p.add_argument("--schemes", default="fp32,q8_0,q4_0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # what the runtime's default_threads reads
    print(f"{'shape':<12} {'scheme':<6} {'C step ms/token':>22} {'Python ms/token':>22} {'ratio':>6}")
    for shape in args.shapes.split(","):
        cfg = get_preset(shape)
        weights = random_weights(cfg)
        for scheme in args.schemes.split(","):
            eng = build_engine("numpy", cfg, weights, scheme)
            if eng.step is None:
                print(f"{shape:<12} {scheme:<6} no C step here (no compiler, or a form the kernels do not multiply)")
                continue
            step, times = eng.step, {"C": [], "py": []}
            for _ in range(args.rounds):
                for name, path in (("C", step), ("py", None)):
                    eng.step = path
                    times[name].append(decode_ms(eng, args.tokens))
            c, py = (f"{min(times[k]):.3f} (median {np.median(times[k]):.3f})" for k in ("C", "py"))
            print(f"{shape:<12} {scheme:<6} {c:>22} {py:>22} {min(times['py']) / min(times['C']):>5.2f}x")


if __name__ == "__main__":
    main()
