"""Ctrl-C and SIGTERM to the whole process group (what a terminal and most supervisors send), repeated at
different moments: `prepare` and `train` stop within seconds, print one line, and leave nothing behind
but what they completed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinylm", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": SRC, "TQDM_DISABLE": "1"})  # fmt: skip


def wait_for(p: subprocess.Popen, what, seconds: float = 120) -> None:
    """Until `what()` holds (the process reached the phase to interrupt), or the process ended."""
    end = time.monotonic() + seconds
    while not what() and p.poll() is None and time.monotonic() < end:
        time.sleep(0.05)


def interrupt(p: subprocess.Popen, sig: int) -> tuple[int, str]:
    os.killpg(p.pid, sig)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"hung after {signal.Signals(sig).name}: {p.communicate()[1][-2000:]}")
    assert "Traceback" not in err, err
    return p.returncode, err.strip()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(3000)]
    f = tmp_path_factory.mktemp("corpus") / "c.txt"
    f.write_text("\n\n".join(" ".join(rng.choices(words, k=60)) for _ in range(20000)))  # ~8 MB
    return f


@pytest.mark.parametrize("sig, phase", [(signal.SIGINT, "clean"), (signal.SIGTERM, "clean"),
                                        (signal.SIGINT, "tokenise"), (signal.SIGTERM, "tokenise")])  # fmt: skip
def test_prepare_stops_cleanly(tmp_path, corpus, sig, phase):
    out = tmp_path / "out"
    p = start(["prepare", corpus, "--out", out, "--tokenizer", "char", "--workers", "2"], tmp_path)
    # tokenise: the tokenizer is saved into the temporary folder just before the workers start
    wait_for(p, lambda: any(tmp_path.glob(".out.*.tmp/.documents.tmp" if phase == "clean" else ".out.*.tmp/tokenizer")))
    if phase == "tokenise":
        time.sleep(0.1)
    if p.poll() is not None:
        pytest.skip(f"prepare finished before the {phase} phase could be interrupted")
    code, err = interrupt(p, sig)
    left = sorted(x.name for x in tmp_path.iterdir())
    if left == ["out"] and (out / "manifest.json").is_file():
        return  # the signal came as it finished (even as Python shut down): the complete output, no temporary
    assert code == 130 and err.splitlines()[-1] == "tinylm prepare: interrupted", err
    assert left == [], left  # stopped: nothing left behind, never a temporary


def test_training_saves_on_sigterm_and_resumes_after_kill_9(tmp_path, corpus):
    prepared = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "tinylm", "prepare", corpus, "--out", prepared, "--tokenizer", "char",
                    "--max-mb", "1"], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    run = tmp_path / "run"
    # eager (--no-compile): the point is signals, and a long run would compile by default
    args = ["train", "--data", prepared, "--out", run, "--layers", "1", "--dim", "32", "--heads", "2", "--context",
            "32", "--batch-size", "4", "--steps", "100000", "--eval-interval", "5", "--eval-batches", "1",
            "--device", "cpu", "--precision", "fp32", "--no-compile", "--quiet"]  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        saved = _step(run)
        p = start(args + (["--resume"] if saved else []), tmp_path)
        wait_for(p, lambda saved=saved: _step(run) > saved)  # a checkpoint of this session is on disk
        time.sleep(random.Random(sig).uniform(0, 1))
        before = _step(run)
        code, err = interrupt(p, sig)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:  # the first Ctrl-C/SIGTERM finishes the step and saves last/
            assert code == 0 and "stopping after this step" in err, err
        assert _step(run) >= before
    assert sorted(x.name for x in run.iterdir() if x.name.startswith(".last")) in ([], [".last.new"], [".last.old"])


def _step(run: Path) -> int:
    """The step saved in last/ (0: none yet), read as any reader would while the run may be saving."""
    for last in (run / "last", run / ".last.new", run / ".last.old"):
        try:
            return json.loads((last / "train_state.json").read_text())["progress"]["step"]
        except (OSError, ValueError):
            continue
    return 0
