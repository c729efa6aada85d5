"""Loss plots: every run writes loss.png; `tinylm plot` compares runs; bad input is one line."""

from __future__ import annotations

import json

import matplotlib.image

from tinylm.cli import main
from tinylm.train.plot import _series

RECORDS = [
    {"step": 10, "loss": 3.0, "lr": 1e-4, "tokens": 640},
    {"step": 20, "loss": 2.5, "lr": 2e-4, "tokens": 1280},
    {"step": 20, "val_loss": 2.7, "tokens": 1280},
]


def _run_dir(path, records=RECORDS):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_series_are_against_tokens():
    assert _series(RECORDS, "loss") == ([640.0, 1280.0], [3.0, 2.5])
    assert _series(RECORDS, "val_loss") == ([1280.0], [2.7])
    assert _series(RECORDS, "lr") == ([640.0, 1280.0], [1e-4, 2e-4])
    assert _series([{"step": 5, "loss": 1.0}], "loss") == ([5.0], [1.0])  # an old log without token counts
    assert _series(RECORDS, "grad_norm") is None


def test_plot_compares_runs(tmp_path, capsys):
    a, b = _run_dir(tmp_path / "a"), _run_dir(tmp_path / "b", RECORDS[:1])
    assert main(["plot", str(a), str(b / "metrics.jsonl"), "--out", str(tmp_path / "ab.png")]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert matplotlib.image.imread(tmp_path / "ab.png").shape[:2] == (450, 800)
    assert main(["plot", str(a)]) == 0
    assert (a / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_bad_input_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no metrics.jsonl" in err and len(err.splitlines()) == 1
    _run_dir(tmp_path / "empty", [{"step": 1}])
    assert main(["plot", str(tmp_path / "empty")]) == 1
    assert "no loss records" in capsys.readouterr().err
