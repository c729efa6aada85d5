"""The trainer's seams: the objective it is given is what it minimises; a partly frozen model trains only
its trainable tensors, saves just those plus a reference to its base, and reloads onto that base."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from tests.train.conftest import model_config, stream_data
from tinylm import transforms
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.layout import FLOAT
from tinylm.model import Model
from tinylm.train import train
from tinylm.train.metrics import read_metrics
from tinylm.train.objectives import cross_entropy

TARGET = 7  # a token the random walk data never makes the only answer


def always_target(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ignore the data's targets: predict TARGET at every position."""
    return cross_entropy(model(x), torch.full_like(y, TARGET))


def test_the_trainer_minimises_the_objective_it_is_given(cfg, tmp_path):
    data = stream_data()
    x, _ = data.val.get(torch.arange(8))
    runs = {}
    for name, objective in (("target", always_target), ("default", None)):
        kw = {"objective": objective} if objective else {}
        runs[name] = train(cfg.replace(out_dir=str(tmp_path / name)), data, model_config(), quiet=True, **kw)
    with torch.no_grad():
        share = {k: (r.model(x).argmax(-1) == TARGET).float().mean().item() for k, r in runs.items()}
    assert share["target"] > 0.95 and share["default"] < 0.3
    losses = [r["loss"] for r in read_metrics(runs["target"].out_dir / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    # evaluation stays plain next-token cross-entropy on the real targets, which this model is bad at
    assert runs["target"].val_loss > max(losses[-1], runs["default"].val_loss) + 0.5


def _frozen_but_final_norm(base_path):
    model = load_checkpoint(base_path).model.train()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("norm.")
    return model


@pytest.fixture
def base(tmp_path):
    torch.manual_seed(1)
    return save_checkpoint(tmp_path / "base", Model(model_config()))


def test_frozen_base_run_saves_only_trainable_tensors_and_reloads_onto_its_base(cfg, tmp_path, base):
    base_bytes = (base / "model.safetensors").read_bytes()
    model = _frozen_but_final_norm(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = train(cfg.replace(out_dir=str(tmp_path / "ft")), stream_data(), model=model, base=base, quiet=True)
    after = r.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"norm.weight", "norm.bias"}  # only the trainable tensors moved
    assert (base / "model.safetensors").read_bytes() == base_bytes  # the base is untouched
    for d in ("last", "best"):
        path = r.out_dir / d
        with safe_open(path / "model.safetensors", "pt") as f:
            assert set(f.keys()) == {"norm.weight", "norm.bias"}
        assert json.loads((path / "base.json").read_text())["path"] == "../../base"
    loaded = load_checkpoint(r.out_dir / "last").model
    x = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(x), r.model(x))


def test_a_changed_base_is_refused_in_one_line(cfg, tmp_path, base):
    r = train(cfg.replace(out_dir=str(tmp_path / "ft"), max_steps=3), stream_data(), model=_frozen_but_final_norm(base),
              base=base, quiet=True)  # fmt: skip
    save_checkpoint(base, Model(model_config()))  # other weights, same shape
    with pytest.raises(TinyLMError, match=r"base.json: the weights of the base .* changed") as err:
        load_checkpoint(r.out_dir / "last")
    assert "\n" not in str(err.value)


def test_frozen_base_run_resumes_exactly(cfg, tmp_path, base):
    data = stream_data()
    whole = train(cfg.replace(out_dir=str(tmp_path / "a")), data, model=_frozen_but_final_norm(base), base=base,
                  quiet=True).model.state_dict()  # fmt: skip
    half = cfg.replace(out_dir=str(tmp_path / "b"), eval_interval=7)
    train(half, data, model=_frozen_but_final_norm(base), base=base, stop_at=10, quiet=True)
    resumed = train(half, data, model=_frozen_but_final_norm(base), base=base, resume=True, quiet=True)
    assert resumed.progress.step == 20
    got = resumed.model.state_dict()
    assert all(torch.equal(whole[k], got[k]) for k in whole)


class GainLinear(nn.Linear):
    """A test-only adapter: the frozen Linear's output times a trainable per-channel gain."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device)
        self.weight, self.bias = linear.weight, linear.bias
        self.gain = nn.Parameter(torch.ones(linear.out_features, device=linear.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) * self.gain


def gain_layout(cfg, spec, layout):
    return layout | {f"layers.{i}.attn.wo.gain": ((cfg.dim,), FLOAT) for i in range(cfg.n_layers)}


def gain_apply(model, spec):
    for block in model.layers:
        block.attn.wo = GainLinear(block.attn.wo)


def test_adapter_run_saves_only_the_adapter_and_reloads_onto_its_base(cfg, tmp_path, base):
    transforms.register("adapters", "test-gain", layout=gain_layout, apply=gain_apply)
    try:
        model = load_checkpoint(base).model.train()
        transforms.apply(model, "adapters", {"kind": "test-gain"})
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith(".gain")
        r = train(cfg.replace(out_dir=str(tmp_path / "ft")), stream_data(), model=model, base=base, quiet=True)
        gains = {f"layers.{i}.attn.wo.gain" for i in range(2)}
        with safe_open(r.out_dir / "last" / "model.safetensors", "pt") as f:
            assert set(f.keys()) == gains
        assert not torch.equal(r.model.layers[0].attn.wo.gain, torch.ones(32))  # the adapter learned
        loaded = load_checkpoint(r.out_dir / "last").model
        assert isinstance(loaded.layers[1].attn.wo, GainLinear)
        x = torch.randint(0, 20, (2, 16))
        with torch.no_grad():
            assert torch.equal(loaded(x), r.model(x))
    finally:
        transforms.unregister("adapters", "test-gain")
