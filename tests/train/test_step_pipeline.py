"""What the trainer does around the compute of a step: batches gathered ahead, compile by default for long runs."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.train.conftest import model_config, stream_data
from tinylm.cli import build_parser
from tinylm.train import train
from tinylm.train.batches import Batches, Sampler
from tinylm.train.config import COMPILE_MINUTES, COMPILE_STEPS, pick_compile
from tinylm.train.metrics import read_metrics


def test_batches_ahead_are_the_sampler_order_and_state():
    data = stream_data().train
    plain = Batches(Sampler(len(data), 4, 2, seed=7), data, torch.device("cpu"), ahead=False)
    ahead = Batches(Sampler(len(data), 4, 2, seed=7), data, torch.device("cpu"), ahead=True)
    try:
        for _ in range(5):
            a, b = plain.step(), ahead.step()
            assert len(a) == len(b) == 2
            assert all(torch.equal(s, t) for ma, mb in zip(a, b, strict=True) for s, t in zip(ma, mb, strict=True))
            # the state to resume from is that after the steps handed out, not after the one drawn ahead
            assert (plain.get_state() == ahead.get_state()).all()
    finally:
        ahead.close()


def test_prefetch_trains_exactly_as_without(cfg, tmp_path):
    mc, data = model_config(dropout=0.1), stream_data()
    runs = [train(cfg.replace(out_dir=str(tmp_path / str(p)), prefetch=p), data, mc, quiet=True) for p in (False, True)]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[x.get("loss", x.get("val_loss")) for x in read_metrics(r.out_dir / "metrics.jsonl")] for r in runs]
    assert losses[0] == losses[1] and len(losses[0]) > 4


def test_compile_by_default_only_for_long_runs(monkeypatch):
    assert pick_compile(None, "cpu", COMPILE_STEPS, None) and not pick_compile(None, "cpu", COMPILE_STEPS - 1, None)
    # a budget decides, whatever the step count
    assert pick_compile(None, "cuda", 10, COMPILE_MINUTES) and not pick_compile(None, "cpu", 10**6, COMPILE_MINUTES / 2)
    assert not pick_compile(None, "mps", 10**6, None)
    assert pick_compile(True, "cpu", 1, 0.1) and not pick_compile(False, "cuda", 10**6, 60.0)  # as asked
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C compiler for inductor's CPU kernels
    assert not pick_compile(None, "cpu", 10**6, None) and pick_compile(None, "cuda", 10**6, None)


@pytest.mark.parametrize("flag, value", [([], None), (["--compile"], True), (["--no-compile"], False)])
def test_train_compile_flags(flag, value):
    args = build_parser().parse_args(["train", "--data", "x.txt", *flag])
    assert getattr(args, "compile", None) is value


class _FailingCompile:
    """What torch.compile returns when inductor cannot build its kernels (e.g. a damaged cache entry)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        from torch._dynamo.exc import TorchDynamoException

        raise TorchDynamoException("kernel build failed")


def test_a_failed_default_compile_trains_eager_and_an_asked_one_says_so(cfg, tmp_path, monkeypatch, capsys):
    from tinylm.errors import TinyLMError
    from tinylm.train import trainer

    monkeypatch.setattr(trainer, "pick_compile", lambda asked, *rest: True if asked is None else asked)
    monkeypatch.setattr(torch, "compile", _FailingCompile)
    mc, data = model_config(), stream_data()
    eager = train(cfg.replace(out_dir=str(tmp_path / "a"), compile=False), data, mc, quiet=True)
    fallback = train(cfg.replace(out_dir=str(tmp_path / "b")), data, mc, quiet=True)  # compile: None, by default
    assert "torch.compile failed (kernel build failed); training without it" in capsys.readouterr().err
    a, b = eager.model.state_dict(), fallback.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the failed first step was redone, not half-applied
    with pytest.raises(TinyLMError, match="--no-compile"):
        train(cfg.replace(out_dir=str(tmp_path / "c"), compile=True), data, mc, quiet=True)


def test_compiled_training_compiles_the_loss_with_the_model_and_matches_eager(cfg, tmp_path, monkeypatch):
    from tinylm.train.objectives import next_token

    compiled: list = []
    real_compile = torch.compile

    def recording(fn, *args, **kwargs):
        compiled.append(fn)
        return real_compile(fn, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    mc, data, short = model_config(), stream_data(), cfg.replace(max_steps=4, eval_interval=4, log_interval=1)
    eager = train(short.replace(out_dir=str(tmp_path / "e"), compile=False), data, mc, quiet=True)
    assert compiled == []
    fused = train(short.replace(out_dir=str(tmp_path / "c"), compile=True), data, mc, quiet=True)
    assert compiled == [next_token]  # one graph: model and cross-entropy, not the model alone
    losses = [[m["loss"] for m in read_metrics(r.out_dir / "metrics.jsonl") if "loss" in m] for r in (eager, fused)]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    a, b = eager.model.state_dict(), fused.model.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
