"""One table for many models: the terminal, Markdown and JSON shapes of a list of EvalResults."""

from __future__ import annotations

import json
from typing import Any

from tinylm.eval.evaluate import EvalResult

COLUMNS = ("model", "tokens", "loss (nats)", "perplexity", "bits/byte", "KL (ref || model)", "top-1 agree")


def _cell(v: float | None, se: float | None = None, digits: int = 4, percent: bool = False) -> str:
    if v is None:
        return "n/a" if not percent else "-"
    scale = 100 if percent else 1
    text = f"{v * scale:.{digits}f}" + ("%" if percent else "")
    return text if se is None else f"{text} ± {se * scale:.{digits}f}"


def rows(results: list[EvalResult]) -> list[list[str]]:
    has_ref = any(r.kl is not None for r in results)
    out = []
    for r in results:
        row = [r.model, f"{r.tokens:,}", _cell(r.loss), _cell(r.perplexity, r.perplexity_se, 3),
               _cell(r.bits_per_byte)]  # fmt: skip
        if has_ref:
            row += [_cell(r.kl, r.kl_se, 5), _cell(r.top1, r.top1_se, 2, percent=True)]
        out.append(row)
    return out


def _header(results: list[EvalResult]) -> list[str]:
    return list(COLUMNS if any(r.kl is not None for r in results) else COLUMNS[:5])


def _protocols(results: list[EvalResult]) -> str:
    return "; ".join(dict.fromkeys(r.protocol for r in results))


def table(results: list[EvalResult], data: str = "") -> str:
    """A plain-text table, the protocol and data above it, the error convention below."""
    header, body = _header(results), rows(results)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    top = [f"protocol: {_protocols(results)}"] + ([f"data: {data}"] if data else [])
    rule = "-" * len(line(header))
    return "\n".join([*top, line(header), rule, *map(line, body), rule, _FOOTNOTE])


def markdown(results: list[EvalResult], data: str = "") -> str:
    header = _header(results)
    lines = [f"Protocol: {_protocols(results)}" + (f"; data: {data}" if data else ""), "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join([*lines, "", _FOOTNOTE])


def to_json(results: list[EvalResult], data: str = "") -> str:
    doc: dict[str, Any] = {"data": data, "results": [r.to_dict() for r in results]}
    return json.dumps(doc, indent=2)


_FOOTNOTE = "± is one standard error over scored positions (perplexity: delta method, exp(loss) * se(loss))"
