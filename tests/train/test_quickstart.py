"""`tinylm quickstart` end to end on the offline corpus (prepared into a temporary cache)."""

from __future__ import annotations

import pytest

from tinylm.checkpoint import load_checkpoint
from tinylm.cli import main


@pytest.mark.slow
def test_quickstart_trains_writes_and_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "qs"
    assert main(["quickstart", "--minutes", "0.1", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "tinylm quickstart: pystdlib" in text and text.count("--- sample") == 3
    assert (out / "loss.png").is_file() and (out / "metrics.jsonl").is_file()
    assert load_checkpoint(out / "best").tokenizer.vocab_size == 2048
