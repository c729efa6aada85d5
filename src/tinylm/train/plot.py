"""Loss plots: `loss.png` of one run and `tinylm plot`'s comparison of several, from their metrics logs.

Loss is drawn against tokens seen (not steps), so runs with different batch sizes line up; the learning
rate goes on a second axis, since a loss curve is mostly read against its schedule.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.fileio import write_bytes

Records = list[dict[str, Any]]


def plot_loss(records: Records, path: Path, title: str = "") -> None:
    """One run: training and validation loss and the learning rate against tokens."""
    plot_runs([("", records)], path, title)


def plot_runs(runs: list[tuple[str, Records]], path: Path, title: str = "") -> None:
    """Each (label, metrics records) as a colour: train loss (line), validation loss (dots), learning rate
    (dashed, right axis). Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    lr_ax = ax.twinx()
    for i, (label, records) in enumerate(runs):
        color, name = f"C{i}", f"{label} " if label else ""
        train = _series(records, "loss")
        val = _series(records, "val_loss")
        lr = _series(records, "lr")
        if train:
            ax.plot(*train, color=color, linewidth=1, alpha=0.6, label=f"{name}train")
        if val:
            ax.plot(*val, "o-", color=color, markersize=3, label=f"{name}validation")
        if lr:
            lr_ax.plot(*lr, "--", color=color, linewidth=0.8, alpha=0.5)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    lr_ax.set_ylabel("learning rate (dashed)")
    lr_ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def _series(records: Records, key: str) -> tuple[list[float], list[float]] | None:
    """(tokens, values) of the records that have `key`; records from logs without token counts use the step."""
    points = [(r.get("tokens", r["step"]), r[key]) for r in records if key in r and "step" in r]
    return (list(map(float, (p[0] for p in points))), [float(p[1]) for p in points]) if points else None


def read_run(run: str | Path) -> tuple[str, Records]:
    """(label, records) of a run directory (or a checkpoint in one, or a metrics.jsonl) for `tinylm plot`."""
    from tinylm.train.metrics import METRICS_FILE, read_metrics

    path = Path(run)
    candidates = [path] if path.is_file() else [path / METRICS_FILE, path.parent / METRICS_FILE]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise TinyLMError(f"no {METRICS_FILE} in {path}; give a run directory written by `tinylm train`")
    records = read_metrics(found)
    if not any("loss" in r or "val_loss" in r for r in records):
        raise TinyLMError(f"{found} holds no loss records yet; plot it after the first log line")
    return str(path).rstrip("/"), records
