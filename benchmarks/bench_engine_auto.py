"""What `--engine auto` should pick: decode tokens/s of the NumPy runtime and the torch engine by model size,
beside the engine the rule (tinylm.generate.generator.engine_for: NumPy up to a parameter count on the CPU,
a lower one for quantized weights) picks for it. Each measurement runs in a fresh process (tinylm.generate.bench), the two
engines one after the other per shape and round, so both see about the same load; ranges over the rounds.

python benchmarks/bench_engine_auto.py                                  # 4 shapes, fp32, 1 thread, 2 rounds
python benchmarks/bench_engine_auto.py --threads 2 --rounds 3 --schemes fp32,q8_0
"""

from __future__ import annotations

import argparse

SHAPES = ("stories260K", "stories15M", "stories42M", "stories110M")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--schemes", default="fp32", help="fp32 and/or quantization schemes, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per decode run")
    args = p.parse_args()
    from tinylm.config import get_preset
    from tinylm.generate.bench import measure_isolated
    from tinylm.generate.generator import NUMPY_MAX_PARAMS, NUMPY_MAX_PARAMS_QUANTIZED, engine_for

    print(f"decode tokens/s, batch 1, {args.threads} thread(s); auto = numpy up to {NUMPY_MAX_PARAMS:,} parameters "
          f"({NUMPY_MAX_PARAMS_QUANTIZED:,} quantized)")  # fmt: skip
    print(f"{'shape':<13}{'params':>8}{'scheme':>7}{'numpy':>18}{'torch':>18}{'faster':>8}{'auto':>7}")
    for shape in args.shapes.split(","):
        cfg = get_preset(shape)
        n = cfg.num_params()
        for scheme in args.schemes.split(","):
            rates: dict[str, list[float]] = {"numpy": [], "torch": []}
            for _ in range(args.rounds):
                for engine in rates:
                    r = measure_isolated(shape, engine, args.threads, args.tokens, 16, 1, scheme)
                    rates[engine].append(r.decode_tok_s)
            mid = {e: sorted(r)[len(r) // 2] for e, r in rates.items()}
            cells = "".join(f"{f'{min(r):,.0f} - {max(r):,.0f}':>18}" for r in rates.values())
            auto = engine_for(cfg, {} if scheme == "fp32" else {"quantization": {"kind": scheme}})
            print(f"{shape:<13}{n / 1e6:>7.1f}M{scheme:>7}{cells}{max(mid, key=mid.get):>8}{auto:>7}", flush=True)


if __name__ == "__main__":
    main()
