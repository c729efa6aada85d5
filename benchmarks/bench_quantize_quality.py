"""Quality of each quantization scheme: perplexity, KL and top-1 agreement against the float model on
held-out text, through tinylm.eval (the issue's targets: int8/q8_0 < 0.5% perplexity increase, q4_0 and
group-128 int4 < 5%, nf4 no worse than int4 at the same block size).

python benchmarks/bench_quantize_quality.py runs/stories/best heldout.txt
python benchmarks/bench_quantize_quality.py runs/stories/best heldout.txt --tokens 50000
"""

from __future__ import annotations

import argparse
import copy

from tinylm.checkpoint import load_checkpoint
from tinylm.eval import evaluate_models
from tinylm.quantize.linear import quantize_model

# (name, scheme, group size): int4 and nf4 also at the other's block size, for a like-for-like comparison
VARIANTS = [("int8", "int8", None), ("q8_0", "q8_0", None), ("q4_0", "q4_0", None), ("int4-g128", "int4", 128),
            ("int4-g64", "int4", 64), ("nf4-g64", "nf4", 64), ("nf4-g128", "nf4", 128)]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("data", help="held-out text (anything tinylm eval reads)")
    p.add_argument("--tokens", type=int, default=30000, help="tokens scored per model (default 30000)")
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    models = [(ckpt.model, ckpt.tokenizer, "fp32")]
    for name, scheme, group in VARIANTS:
        model = copy.deepcopy(ckpt.model)
        quantize_model(model, scheme, group)
        models.append((model, ckpt.tokenizer, name))
    results = evaluate_models(models, args.data, reference=models[0], max_tokens=args.tokens)
    base = results[0].perplexity
    print(f"{'weights':<10} {'perplexity':>10} {'vs fp32':>8} {'KL':>8} {'top-1':>7}")
    for r in results:
        kl, top1 = (f"{r.kl:.5f}", f"{100 * r.top1:.1f}%") if r.kl is not None else ("-", "-")
        print(f"{r.model:<10} {r.perplexity:>10.3f} {100 * (r.perplexity / base - 1):>+7.2f}% {kl:>8} {top1:>7}")
    print(f"{results[0].tokens:,} tokens of {args.data}; {results[0].protocol}")


if __name__ == "__main__":
    main()
