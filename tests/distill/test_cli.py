"""`tinylm distill` from the command line: a teacher trained by `tinylm train` teaches a smaller student
(live, then from a cache), the run resumes with its saved settings, and bad input is one line."""

from __future__ import annotations

import json
import random

import pytest

from tinylm.cli import main
from tinylm.distill.session import SETTINGS_FILE
from tinylm.train.data import prepared_dir
from tinylm.train.metrics import read_metrics
from tinylm.train.state import Saved

RUN = ["--batch-size", "4", "--eval-batches", "1", "--eval-interval", "2", "--precision", "fp32", "--device", "cpu",
       "--quiet"]  # fmt: skip
SHAPE = ["--family", "gpt2", "--layers", "1", "--dim", "16", "--heads", "2"]
STUDENT = [*SHAPE, "--context", "16", *RUN]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """~20 KB of sentences from a few words (seeded), enough to train a 300-token BPE on."""
    rng = random.Random(0)
    words = "the cat dog sat ran on a mat big small red blue and then saw her his friend happy sad"
    lines = [" ".join(rng.choices(words.split(" "), k=rng.randint(4, 12))).capitalize() + "." for _ in range(600)]
    path = tmp_path_factory.mktemp("text") / "sentences.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("teacher")
    args = ["train", "--data", str(text_file), "--out", str(out), "--vocab-size", "300", "--family", "gpt2",
            "--layers", "2", "--dim", "32", "--heads", "2", "--context", "32", "--steps", "2", *RUN]  # fmt: skip
    assert main(args) == 0
    return out / "last"


def test_distill_live_then_resume_with_the_saved_settings(tmp_path, text_file, teacher):
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--data", str(text_file), "--out", str(out), "--steps", "2",
            "--alpha", "0.8", "--divergence", "jsd", *STUDENT]  # fmt: skip
    assert main(args) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert any("train_kd" in r and r["train_kd"] > 0 for r in records)
    saved = json.loads((out / SETTINGS_FILE).read_text())
    assert saved["alpha"] == 0.8 and saved["divergence"] == "jsd" and saved["cache"] is None
    prepared = (out / "data" / "manifest.json").stat().st_mtime_ns
    assert main(["distill", "--out", str(out), "--resume", "--steps", "3", "--quiet"]) == 0
    assert Saved.load(out / "last").progress.step == 3
    assert (out / "data" / "manifest.json").stat().st_mtime_ns == prepared  # tokenised once, with the teacher's
    assert json.loads((out / SETTINGS_FILE).read_text())["alpha"] == 0.8


def test_distill_from_a_cache_written_once(tmp_path, text_file, teacher, capsys):
    cache = tmp_path / "cache"
    for run in ("a", "b"):
        args = ["distill", "--teacher", str(teacher), "--data", str(text_file), "--out", str(tmp_path / run),
                "--steps", "2", "--cache-teacher", str(cache), "--top-k", "8", *STUDENT]  # fmt: skip
        assert main(args) == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["top_k"] == 8 and manifest["vocab"] == 300 and manifest["seq_len"] == 16
    # the same cache for data tiled another way is refused
    args = ["distill", "--teacher", str(teacher), "--data", str(text_file), "--out", str(tmp_path / "c"),
            "--steps", "2", "--cache-teacher", str(cache), *SHAPE, "--context", "8", *RUN]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "was made for other data" in err and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokenizer", "char"], "different tokenizers"),
        (["--context", "64"], "reads at most 32 tokens but the student trains on sequences of 64"),
        (["--alpha", "2"], "alpha must be in [0, 1]"),
    ],
)
def test_bad_input_is_one_line(tmp_path, text_file, teacher, capsys, extra, message):
    args = ["distill", "--teacher", str(teacher), "--data", str(text_file), "--out", str(tmp_path / "s"),
            "--steps", "1", *STUDENT, *extra]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_saved_tokenizer_names_and_reuses_prepared_data(tmp_path, monkeypatch, teacher):
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    where, todo = prepared_dir("tinystories", tmp_path, str(teacher / "tokenizer"), 4096)
    assert todo and where.parent == tmp_path / "cache" / "prepared" and where.name.startswith("tinystories-tok")
