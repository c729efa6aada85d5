"""The summary `tinylm quantize` prints: sizes and errors per tensor, and quality against the original."""

from __future__ import annotations

from pathlib import Path

from tinylm.quantize.linear import TensorReport

WEIGHTS = "model.safetensors"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def table(reports: list[TensorReport], before: Path, after: Path) -> str:
    rows = [f"{'tensor':<32} {'shape':>12} {'group':>5} {'fp32 bytes':>12} {'bytes':>10} {'RMSE':>9}"]
    for r in reports:
        shape = "x".join(map(str, r.shape))
        rows.append(f"{r.name:<32} {shape:>12} {r.group:>5} {r.bytes_before:>12,} {r.bytes_after:>10,} {r.rmse:>9.2e}")
    b, a = (p / WEIGHTS for p in (before, after))
    rows.append(f"{WEIGHTS}: {_mb(b.stat().st_size)} -> {_mb(a.stat().st_size)} "
                f"({b.stat().st_size / a.stat().st_size:.2f}x smaller)")  # fmt: skip
    return "\n".join(rows)


def quality(before: Path, after: Path, data: str, tokens: int) -> str:
    """Perplexity, KL and top-1 agreement of the quantized model against the original, through tinylm.eval."""
    try:
        from tinylm.eval import evaluate_models
        from tinylm.eval.report import table as eval_table
    except ImportError:
        return "note: tinylm.eval is not available in this tinylm; no quality comparison"
    results = evaluate_models([before, after], data, reference=before, max_tokens=tokens)
    return eval_table(results, data)
