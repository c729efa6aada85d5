"""`tinylm train`, `task`, `plan` and `quickstart` from the command line, and their one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from tests.train.conftest import model_config, stream_data
from tinylm.checkpoint import load_checkpoint
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.plan import candidates, closest, parse_count
from tinylm.train import TrainConfig, train
from tinylm.train.state import Saved

TINY = ["--family", "gpt2", "--layers", "1", "--dim", "32", "--heads", "2", "--context", "32", "--batch-size", "4",
        "--eval-batches", "2", "--precision", "fp32", "--device", "cpu", "--quiet"]  # fmt: skip
TINY_CFG = TrainConfig(batch_size=4, max_steps=2, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, shared_data):
    """~40 KB of TinyStories, prepared once per module by the first `tinylm train` that uses it."""
    stories = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")[:40_000]
    path = tmp_path_factory.mktemp("text") / "stories.txt"
    path.write_text(stories, encoding="utf-8")
    return path


def test_train_from_a_text_file_then_resume_longer(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(text_file), "--out", str(out), "--vocab-size", "300", *TINY]
    assert main([*args, "--steps", "4", "--eval-interval", "2"]) == 0
    assert (out / "data" / "manifest.json").is_file()  # prepared with `prepare` beside the run
    ck = load_checkpoint(out / "last")
    assert ck.config.vocab_size == ck.tokenizer.vocab_size == 300
    # --resume takes the saved settings; --steps extends the run
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 0
    assert Saved.load(out / "last").progress.step == 6
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 1  # nothing left: says how to extend
    assert "larger --steps" in capsys.readouterr().err
    # a --minutes run resumed with --steps goes on by steps
    minutes = Saved.load(out / "last").progress.seconds / 60 + 0.01
    assert main(["train", "--out", str(out), "--resume", "--minutes", f"{minutes:.4f}", "--quiet"]) == 0
    timed = Saved.load(out / "last")
    assert timed.cfg.minutes is not None and timed.progress.step > 6
    assert main(["train", "--out", str(out), "--resume", "--steps", str(timed.progress.step + 2), "--quiet"]) == 0
    assert Saved.load(out / "last").progress.step == timed.progress.step + 2
    assert Saved.load(out / "last").cfg.minutes is None
    # another shape on --resume is refused
    assert main(["train", "--out", str(out), "--resume", "--dim", "64", "--quiet"]) == 1
    assert "another shape" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "gpt5"], "unknown preset 'gpt5'"),
        (["--context", "100000"], "not more than the context of 100000"),
        (["--batch-size", "100000"], "more than the"),
        (["--lr", "-1"], "lr must be positive"),
    ],
)
def test_bad_input_is_one_line(tmp_path, text_file, capsys, extra, message):
    args = ["train", "--data", str(text_file), "--out", str(tmp_path / "run"), "--vocab-size", "300", *TINY, *extra]
    if "--preset" in extra:
        args = [a for a in args if a not in ("--family", "gpt2")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm train: error: ") and message in err and "\n" not in err


def test_missing_data_and_unwritable_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/tinylm, is relative
    assert main(["train", "--data", str(tmp_path / "nope.txt"), "--quiet"]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["train", "--quiet"]) == 1
    assert "--data is required" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before the run folder (and its lock) were made
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TinyLMError, match="file/run: a part of the path is a file"):
        train(TINY_CFG.replace(out_dir=str(blocker / "run")), stream_data(), model_config())


class OutOfMemory(Model):
    def forward(self, idx, targets=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_hints_at_the_batch(tmp_path):
    with pytest.raises(TinyLMError, match=r"out of memory .* lower --batch-size"):
        train(TINY_CFG.replace(out_dir=str(tmp_path)), stream_data(), model=OutOfMemory(model_config()), quiet=True)


def test_plan_counts_and_sizes(capsys):
    assert parse_count("300M") == 300_000_000 and parse_count("1.5B") == 1_500_000_000 and parse_count("20k") == 20_000
    with pytest.raises(TinyLMError):
        parse_count("lots")
    c = closest(candidates(32000, 256), 15e6)
    assert c.name == "stories15M"  # llama2.c's 15M shape with its 32K vocabulary
    assert main(["plan", "--tokens", "300M"]) == 0
    out = capsys.readouterr().out
    assert "<-" in out and "train on 300.0M tokens" in out
    assert main(["plan", "--params", "15M", "--vocab-size", "32000"]) == 0
    out = capsys.readouterr().out
    assert "--preset stories15M" in out and "303.8M tokens" in out  # 20 x 15.2M
    assert main(["plan"]) == 1
    assert main(["plan", "--minutes", "-1"]) == 1 and "give a positive wall-clock budget" in capsys.readouterr().err


def test_task_addition_cli_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "add"
    assert main(["task", "addition", "--digits", "1", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    assert "exact match:" in capsys.readouterr().out
    assert load_checkpoint(out / "last").tokenizer.decode([1, 2]) == "12"
    assert main(["task", "addition", "--digits", "9", "--quiet"]) == 1


@pytest.mark.parametrize(("task", "shown"), [
    ("addition", ["gpt2, 2 layers, dim 64", "(default 3000)", "(default 256)", "(default 0.003)", "(default 250)"]),
    ("charlm", ["context 64", "(default 2000)", "(default 12)", "(default 0.0001)", "(default runs/charlm)"]),
])  # fmt: skip
def test_task_help_shows_the_tasks_own_defaults(task, shown, capsys):
    with pytest.raises(SystemExit):
        main(["task", task, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert all(s in text for s in shown), [s for s in shown if s not in text]
    assert "TrainConfig" not in text and "(default 1000)" not in text


def test_plan_budget_picks_the_lowest_predicted_loss_and_measures_past_it(monkeypatch):
    import tinylm.plan as plan

    cands = candidates(4096, 256)
    k = 1e9  # tokens/s = k / N: a fixed flop rate, so D = k * seconds / N
    monkeypatch.setattr(plan, "measure", lambda cfg, *a, **kw: k / cfg.num_params())
    # L = E + A N^-a + B (kS/N)^-b is lowest where a A N^-a = b B (kS)^-b N^b: put that optimum on cands[3]
    a, b, A, B = 0.3478, 0.3658, 482.01, 2085.43  # Besiroglu et al.'s refit of Chinchilla
    seconds = (cands[3].params ** (a + b) * b * B / (a * A)) ** (1 / b) / k
    assert plan.fit_budget(cands, seconds, 16, "cpu", "fp32", progress=False) is cands[3]
    assert cands[5].tokens_per_s is not None and cands[6].tokens_per_s is None  # two past the best, no more
    fresh = candidates(4096, 256)
    assert plan.fit_budget(fresh, 1e-3, 16, "cpu", "fp32", progress=False) is fresh[0]  # almost no time: the smallest
    assert fresh[2].tokens_per_s is not None and fresh[3].tokens_per_s is None
    # few distinct tokens: repeats are worth less, so the same time favours a bigger model
    scarce = candidates(4096, 256)
    unique = 0.01 * k * seconds / cands[3].params
    assert scarce.index(plan.fit_budget(scarce, seconds, 16, "cpu", "fp32", unique=unique, progress=False)) > 3


def test_repeated_tokens_count_less_than_fresh_ones():
    from tinylm.plan import effective_tokens

    assert effective_tokens(5e6, 1e7) == 5e6 and effective_tokens(5e6, None) == 5e6
    # Muennighoff et al.: U + U R* (1 - exp(-(D/U - 1) / R*)), R* = 15.4; at 1 + R* passes 1 - 1/e of the repeats count
    assert effective_tokens(1e6 * 16.4, 1e6) == pytest.approx(1e6 + 1e6 * 15.4 * (1 - math.exp(-1)))
    assert 16e6 < effective_tokens(1e6 * 1000, 1e6) <= 16.4e6  # tends to U (1 + R*), never more
