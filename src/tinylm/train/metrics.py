"""The metrics log (`metrics.jsonl`, one JSON object per line) and the end-of-run summary."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tinylm.fileio import write_text

METRICS_FILE = "metrics.jsonl"


class Window:
    """Mean loss and tokens/s since the last log line."""

    def __init__(self) -> None:
        self.t0, self.losses, self.tokens = time.perf_counter(), [], 0

    def add(self, loss: float, tokens: int) -> None:
        if math.isfinite(loss):
            self.losses.append(loss)
        self.tokens += tokens

    def loss(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else math.nan

    def rate(self) -> float:
        return self.tokens / max(time.perf_counter() - self.t0, 1e-9)


class MetricsLog:
    """Append-only records: {"step", "loss", "lr", "tokens", "tok_s", ...} every `log_interval` steps and
    {"step", "val_loss", ...} at every evaluation. A resumed run first drops what came after its step,
    so the log always describes the run whose weights are on disk."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is None:
            write_text(path, "")
        else:
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return out


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
