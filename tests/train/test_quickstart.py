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
    assert "tinylm quickstart: pydocs" in text and text.count("--- sample") == 3
    bpb = float(text.split("held-out bits per byte: ")[1].split()[0])
    assert 0 < bpb < 8  # scored on held-out text: any model beats 8 bits (a raw byte)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG" and (out / "metrics.jsonl").is_file()
    assert load_checkpoint(out / "best").tokenizer.vocab_size == 1024
