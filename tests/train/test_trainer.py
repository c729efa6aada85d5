"""The training loop: learning, exact resume, gradient accumulation, the NaN guard, files written."""

from __future__ import annotations

import pytest
import torch

from tests.train.conftest import model_config, stream_data
from tinylm.checkpoint import load_checkpoint
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.train import train
from tinylm.train.metrics import read_metrics


def test_loss_decreases_and_run_files(cfg):
    r = train(cfg.replace(max_steps=60, eval_interval=30), stream_data(), model_config(), quiet=True)
    records = read_metrics(r.out_dir / "metrics.jsonl")
    losses = [x["loss"] for x in records if "loss" in x]
    vals = [x["val_loss"] for x in records if "val_loss" in x]
    assert losses[-1] < 0.6 * losses[0] and vals[-1] < vals[0]
    assert r.progress.step == 60 and r.progress.tokens == 60 * 4 * 16
    for d in ("last", "best"):
        ck = load_checkpoint(r.out_dir / d)
        assert ck.tokenizer is not None and ck.config == model_config()
    assert (r.out_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert {"train_state.json", "optimizer.safetensors", "rng.safetensors", "metrics.jsonl"} <= {
        p.name for p in (r.out_dir / "last").iterdir()
    }
    assert not (r.out_dir / "best" / "optimizer.safetensors").exists()  # best/ is a weights snapshot


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_exact(cfg, tmp_path):
    # dropout and an eval between the halves: every random state and the data position must come back
    mc, data = model_config(dropout=0.1), stream_data()
    whole = _weights(train(cfg.replace(out_dir=str(tmp_path / "a")), data, mc, quiet=True).model)
    half = cfg.replace(out_dir=str(tmp_path / "b"), eval_interval=7)
    first = train(half, data, mc, stop_at=10, quiet=True)
    assert first.progress.step == 10
    resumed = train(half, data, mc, resume=True, quiet=True)
    assert resumed.progress.step == 20
    got = _weights(resumed.model)
    assert all(torch.equal(whole[k], got[k]) for k in whole)
    # and from the files: last/ holds the same weights
    on_disk = load_checkpoint(tmp_path / "b" / "last").model.state_dict()
    assert all(torch.equal(whole[k], on_disk[k]) for k in whole)
    steps = [x["step"] for x in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert steps == sorted(steps) and max(steps) == 20


def test_gradient_accumulation_matches_one_big_batch(cfg, tmp_path):
    # no biases: a key bias gets no gradient, only float noise, which AdamW scales up to full-size steps
    mc, data = model_config(bias=False), stream_data()
    big = train(cfg.replace(out_dir=str(tmp_path / "a"), batch_size=8, max_steps=5), data, mc, quiet=True)
    acc = train(cfg.replace(out_dir=str(tmp_path / "b"), batch_size=2, batch_tokens=8 * 16, max_steps=5), data, mc,
                quiet=True)  # fmt: skip
    assert acc.progress.tokens == big.progress.tokens == 5 * 8 * 16
    a, b = _weights(big.model), _weights(acc.model)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)
    assert not all(torch.equal(a[k], _weights(Model(mc))[k]) for k in a)  # it did train


class Flaky(Model):
    """Returns a NaN loss on the training forward passes numbered in `bad` (1-based)."""

    def __init__(self, cfg, bad):
        super().__init__(cfg)
        self.calls, self.bad = 0, bad

    def forward(self, idx, targets=None):  # logits, or the loss given targets (as Model; the trainer asks for it)
        out = super().forward(idx, targets=targets)
        if self.training:
            self.calls += 1
            if self.calls in self.bad:
                out = out * float("nan")
        return out


def test_nan_guard_skips_then_stops(cfg, capsys):
    torch.manual_seed(0)
    model = Flaky(model_config(), bad={3})
    r = train(cfg.replace(max_steps=6, max_bad_steps=3), stream_data(), model=model, quiet=True)
    assert "loss nan at step 3; skipped the update" in capsys.readouterr().err
    assert r.progress.step == 6 and r.progress.bad_steps == 0
    assert all(torch.isfinite(p).all() for p in r.model.parameters())

    model = Flaky(model_config(), bad=set(range(4, 100)))
    before = _weights(model)
    with pytest.raises(TinyLMError, match="3 non-finite steps in a row, stopping"):
        train(cfg.replace(max_steps=20, max_bad_steps=3, eval_interval=2), stream_data(), model=model, quiet=True,
              overwrite=True)  # fmt: skip
    # the last checkpoint (step 2, before the NaNs) is kept and finite
    kept = load_checkpoint(cfg.out_dir + "/last").model.state_dict()
    assert all(torch.isfinite(v).all() for v in kept.values())
    assert any(not torch.equal(before[k], kept[k]) for k in kept)


def test_minutes_budget_fits_the_step_count(cfg):
    # a 3-second budget: max_steps is re-planned from the measured step time (never the 10,000 asked for)
    r = train(cfg.replace(max_steps=10_000, minutes=0.05, schedule="wsd", eval_interval=10_000), stream_data(),
              model_config(), quiet=True)  # fmt: skip
    assert 4 <= r.progress.step < 10_000 and r.progress.max_steps < 10_000
    assert r.progress.seconds < 60  # it stopped on the clock, not on the step count
    assert load_checkpoint(r.out_dir / "last").config == model_config()


def test_resume_with_more_steps_extends_the_run(cfg):
    first = train(cfg, stream_data(), model_config(), quiet=True)
    assert first.progress.step == 20
    with pytest.raises(TinyLMError, match="larger --steps"):
        train(cfg, stream_data(), model_config(), resume=True, quiet=True)  # nothing left to do: says how to extend
    longer = train(cfg.replace(max_steps=30), stream_data(), model_config(), resume=True, quiet=True)
    assert longer.progress.step == 30 and longer.progress.tokens == 30 * 4 * 16
    steps = [x["step"] for x in read_metrics(longer.out_dir / "metrics.jsonl") if "loss" in x]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_resume_with_more_minutes_extends_the_run(cfg):
    budget = cfg.replace(max_steps=10_000, minutes=0.03, schedule="wsd")
    first = train(budget, stream_data(), model_config(), quiet=True)
    with pytest.raises(TinyLMError, match="larger --minutes"):
        train(budget.replace(minutes=first.progress.seconds / 60 * 0.9), stream_data(), model_config(), resume=True,
              quiet=True)  # fmt: skip
    spent = first.progress.seconds / 60  # (more than asked on a busy machine: the final save is not budgeted)
    more = train(budget.replace(minutes=spent + 0.03), stream_data(), model_config(), resume=True, quiet=True)
    assert more.progress.step > first.progress.step
    assert more.progress.seconds > first.progress.seconds


def test_clock_fits_steps_warmup_and_evaluations_to_the_budget(cfg):
    from tinylm.train.schedule import eval_interval, warmup_steps
    from tinylm.train.state import Progress
    from tinylm.train.trainer import _Clock

    c = cfg.replace(max_steps=10_000, minutes=1.0, schedule="wsd", warmup_steps=None, eval_interval=None)
    p = Progress(max_steps=10_000, data_size=1)
    clock = _Clock(c, p)
    for step in range(1, 31):  # 0.5 s per step: 97% of 60 s is 116 steps
        p.step, p.seconds = step, 0.5 * step
        assert not clock.update(p)
    assert p.max_steps == 116
    assert warmup_steps(c, p.max_steps) == 6 and eval_interval(c, p.max_steps) == 15
    p.step, p.seconds = 117, 66.1
    assert clock.update(p)  # past 110% of the budget: stop


def test_progress_bar_text_shows_validation_and_task_metrics():
    from tinylm.train.trainer import _postfix

    assert _postfix(2.5, 1500.0, None, {}) == "loss 2.500 | 1.5K tok/s"
    text = _postfix(2.5, 1500.0, 2.25, {"exact_match": 0.973, "done": False, "note": "x"})
    assert text == "loss 2.500 | 1.5K tok/s | val 2.250 | exact_match 97.3%"


def test_evaluations_take_at_most_a_tenth_of_a_run_unless_set(cfg):
    from types import SimpleNamespace

    from tinylm.train.state import Progress
    from tinylm.train.trainer import _eval_every

    run = SimpleNamespace(cfg=cfg.replace(eval_interval=None), progress=Progress(max_steps=800, data_size=1),
                          eval_cost=0.0)  # fmt: skip
    assert _eval_every(run) == 100  # 8 per run
    run.eval_cost = 25.0  # an evaluation as long as 25 steps: every 250 steps at most 10% of the time
    assert _eval_every(run) == 250
    run.cfg = cfg.replace(eval_interval=7)
    assert _eval_every(run) == 7  # as set
