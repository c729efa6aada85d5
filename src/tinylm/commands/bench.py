"""`tinylm bench`: generation speed of both engines against this machine's memory-bandwidth bound."""

from __future__ import annotations

import argparse

NAME = "bench"
ORDER = 60
HELP = (
    "Measure decode and prefill tokens/s of the torch engine and the NumPy runtime on llama2.c model shapes."
)
EXAMPLES = """
  tinylm bench
  tinylm bench --shapes stories15M --engines torch-compile,numpy --threads 2
  tinylm bench --tokens 64 --repeats 1 --json bench.json
  tinylm bench --shapes stories110M --engines numpy,torch --schemes fp32,q8_0,q4_0 --threads 2
  tinylm bench --shapes stories110M --engines torch --schemes fp32,w8a8 --prompt-tokens 256 --threads 2
"""


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", type=_csv(str), default=None,
                   help="model presets, comma-separated (default: stories260K,stories15M,stories110M)")  # fmt: skip
    p.add_argument("--engines", type=_csv(str), default=None,
                   help="numpy, torch, torch-compile, comma-separated (default: all three)")  # fmt: skip
    p.add_argument(
        "--threads", type=_csv(int), default=[1, 2], help="thread counts, comma-separated (default: 1,2)"
    )
    p.add_argument("--schemes", type=_csv(str), default=None,
                   help="weights: fp32 and/or quantization schemes (int8, q8_0, q4_0, int4, nf4; w8a8: int8 "
                        "activations too), comma-separated "
                        "(default fp32)")  # fmt: skip
    p.add_argument("--tokens", type=int, default=256, help="new tokens per decode run (default 256)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length for prefill (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the table gives their range (default 3)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from tinylm.config import get_preset
    from tinylm.errors import TinyLMError
    from tinylm.fileio import write_json
    from tinylm.generate import bench

    shapes = args.shapes or list(bench.SHAPES)
    engines = args.engines or list(bench.ENGINES)
    for s in shapes:
        get_preset(s)
    unknown = sorted(set(engines) - set(bench.ENGINES))
    if unknown:
        raise TinyLMError(f"unknown engine {unknown[0]!r}; choose from: {', '.join(bench.ENGINES)}")
    from tinylm.quantize import get_scheme

    schemes = args.schemes or [bench.FLOAT]
    for s in schemes:
        if s not in (bench.FLOAT, bench.W8A8):
            get_scheme(s)
    if min(args.threads, default=0) < 1 or args.tokens < 1 or args.prompt_tokens < 1 or args.repeats < 1:
        raise TinyLMError("--threads, --tokens, --prompt-tokens and --repeats must be positive")
    results, bandwidth = bench.run(
        shapes, engines, args.threads, args.tokens, args.prompt_tokens, args.repeats, schemes=schemes
    )
    print(bench.format_table(results, bandwidth))
    if args.json:
        write_json(args.json, {"bandwidth_gb_s": bandwidth, "results": [asdict(r) for r in results]})
