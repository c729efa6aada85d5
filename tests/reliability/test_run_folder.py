"""A run folder has one writer at a time, and an existing run is never replaced unasked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import model_config, stream_data
from tinylm.errors import TinyLMError
from tinylm.runlock import LOCK_FILE
from tinylm.train import TrainConfig, train

SRC = str(Path(__file__).resolve().parents[2] / "src")
HOLD = "import sys, time; from tinylm.runlock import run_lock\nwith run_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)"


@pytest.fixture
def cfg(tmp_path) -> TrainConfig:
    return TrainConfig(out_dir=str(tmp_path / "run"), batch_size=4, max_steps=4, lr=3e-3, warmup_steps=1,
                       eval_interval=2, eval_batches=1, log_interval=2, precision="fp32", device="cpu")  # fmt: skip


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process owning `folder` (no torch: it starts in a blink)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_gets_one_line_and_a_dead_ones_lock_is_taken_over(cfg):
    out = Path(cfg.out_dir)
    owner = hold_lock(out)
    try:
        with pytest.raises(TinyLMError, match=rf"in use by another tinylm process \(pid {owner.pid}\)"):
            train(cfg, stream_data(), model_config(), quiet=True)
        assert not (out / "last").exists() and not (out / "metrics.jsonl").exists()
    finally:
        owner.send_signal(signal.SIGKILL)  # dies holding it, as with kill -9
        owner.wait()
    assert (out / LOCK_FILE).read_text().strip() == str(owner.pid)  # the stale lock file is still there
    r = train(cfg, stream_data(), model_config(), quiet=True)
    assert r.progress.step == 4 and (out / "last").is_dir()


def test_an_existing_run_is_replaced_only_with_overwrite(cfg, capsys):
    from tinylm.cli import main

    first = train(cfg, stream_data(), model_config(), quiet=True)
    before = (first.out_dir / "last" / "model.safetensors").read_bytes()
    with pytest.raises(TinyLMError, match="already holds a run; continue it with --resume, replace it with --overwrite"):
        train(cfg, stream_data(), model_config(), quiet=True)
    assert (first.out_dir / "last" / "model.safetensors").read_bytes() == before
    # the CLI says the same in one line
    data = first.out_dir.parent / "walk.txt"
    data.write_text("the quick brown fox jumps over the lazy dog\n\n" * 50)
    assert main(["train", "--data", str(data), "--out", cfg.out_dir, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "\n" not in err
    assert (first.out_dir / "last" / "model.safetensors").read_bytes() == before
    r = train(cfg.replace(seed=7), stream_data(), model_config(), quiet=True, overwrite=True)
    assert r.progress.step == 4 and (first.out_dir / "last" / "model.safetensors").read_bytes() != before


def test_resume_after_a_crash_between_the_renames(cfg):
    """The issue's case: only .last.old and a temporary folder are left; --resume continues from it."""
    first = train(cfg, stream_data(), model_config(), stop_at=2, quiet=True)
    out = first.out_dir
    os.rename(out / "last", out / ".last.old")
    (out / ".last.4194305.x.tmp").mkdir()  # a dead process's half-written save
    r = train(cfg, stream_data(), model_config(), resume=True, quiet=True)
    assert r.progress.step == 4
    assert sorted(p.name for p in out.iterdir() if "last" in p.name) == ["last"]
