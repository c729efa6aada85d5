"""Learning-rate schedules at their key steps."""

from __future__ import annotations

import itertools

import pytest

from tinylm.train import TrainConfig
from tinylm.train.schedule import lr_at


def test_cosine_key_steps():
    c = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=111, schedule="cosine")
    assert lr_at(0, c) == pytest.approx(0.1)  # warmup: (step + 1) / warmup
    assert lr_at(4, c) == pytest.approx(0.5)
    assert lr_at(10, c) == pytest.approx(1.0)  # peak right after warmup
    assert lr_at(60, c) == pytest.approx(0.55)  # halfway: the mean of peak and floor
    assert lr_at(110, c) == pytest.approx(0.1)  # the last step reaches min_lr
    assert lr_at(500, c) == pytest.approx(0.1)
    lrs = [lr_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_wsd_key_steps():
    c = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=10, max_steps=100, decay_frac=0.2, schedule="wsd")
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == lr_at(79, c) == 1.0  # stable until the last 20% of steps
    assert lr_at(80, c) == pytest.approx(1.0)  # decay starts at step 80 ...
    assert lr_at(89, c) == pytest.approx(0.5, abs=0.03)  # ... linearly ...
    assert lr_at(99, c) == pytest.approx(0.0)  # ... to min_lr at the last step
    assert lr_at(50, c, max_steps=1000) == 1.0  # the stable phase does not depend on the run's length


def test_constant_and_default_floor():
    c = TrainConfig(lr=2.0, warmup_steps=0, max_steps=10, schedule="constant")
    assert lr_at(0, c) == lr_at(9, c) == 2.0
    assert lr_at(9, TrainConfig(lr=2.0, warmup_steps=0, max_steps=10)) == pytest.approx(0.2)  # min_lr = lr / 10


def test_warmup_and_eval_interval_follow_the_run_length():
    from tinylm.train.schedule import eval_interval, warmup_steps

    c = TrainConfig(lr=1.0)  # neither set: both follow max_steps
    assert warmup_steps(c, 100) == 5 and warmup_steps(c, 10_000) == 100
    assert eval_interval(c, 100) == 13 and eval_interval(c, 10_000) == 200 and eval_interval(c, 3) == 1
    assert lr_at(4, c, max_steps=100) == pytest.approx(1.0)  # a 100-step run peaks after 5 steps, not 100
    assert lr_at(99, c, max_steps=100) == pytest.approx(0.1)  # ... and still decays to the floor
    set_ = TrainConfig(lr=1.0, warmup_steps=30, eval_interval=7)
    assert warmup_steps(set_, 100) == 30 and eval_interval(set_, 100) == 7
