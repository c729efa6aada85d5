"""Declared checkpoint transforms: a stand-in int8 quantization registered here (test-only) saves,
loads and round-trips bit-exactly through the normal load path; unknown sections and kinds are one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm import transforms
from tinylm.checkpoint import load_checkpoint, model_state_dict, save_checkpoint
from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.layout import Layout, linear_shapes
from tinylm.model import Model


class Int8Linear(nn.Module):
    """nn.Linear's call signature over an int8 weight with one float32 scale per output row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        if w.is_meta:
            q, scale = torch.empty(w.shape, dtype=torch.int8, device="meta"), torch.empty(w.shape[0], device="meta")
        else:
            scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
            q = (w / scale[:, None]).round().to(torch.int8)
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale.float())
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype) * self.scale[:, None].to(x.dtype), self.bias)


def int8_layout(cfg: ModelConfig, spec: dict, layout: Layout) -> Layout:
    out = dict(layout)
    for i in range(cfg.n_layers):
        for name, shape in linear_shapes(cfg).items():
            out[f"layers.{i}.{name}.weight"] = (shape, "int8")
            out[f"layers.{i}.{name}.scale"] = (shape[:1], "float32")
    return out


def int8_apply(model: Model, spec: dict) -> None:
    for block in model.layers:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear(child))


@pytest.fixture
def int8() -> Iterator[None]:
    transforms.register("quantization", "test-int8", layout=int8_layout, apply=int8_apply)
    yield
    transforms.unregister("quantization", "test-int8")


@pytest.mark.parametrize("cfg", [tiny_llama(), tiny_gpt2(tie_embeddings=False)], ids=["llama", "gpt2-untied"])
def test_declared_transform_round_trips_bit_exactly(tmp_path: Path, int8: None, cfg: ModelConfig) -> None:
    model = Model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        plain = model(idx)
    transforms.apply(model, "quantization", {"kind": "test-int8"})
    with torch.no_grad():
        quantized = model(idx)
    assert not torch.equal(plain, quantized) and torch.allclose(plain, quantized, atol=2e-2)
    path = save_checkpoint(tmp_path / "c", model)
    assert json.loads((path / "config.json").read_text())["quantization"] == {"kind": "test-int8"}
    loaded = load_checkpoint(path).model
    assert isinstance(loaded.layers[0].attn.wqkv, Int8Linear)
    assert loaded.layers[1].mlp.w2.weight.dtype == torch.int8
    want, got = model_state_dict(model), model_state_dict(loaded)
    assert want.keys() == got.keys()
    for k in want:
        assert want[k].dtype == got[k].dtype and torch.equal(want[k], got[k]), k
    with torch.no_grad():
        assert torch.equal(loaded(idx), quantized)
    # saving what was loaded writes the same declaration again
    again = save_checkpoint(tmp_path / "again", loaded)
    assert (again / "config.json").read_bytes() == (path / "config.json").read_bytes()
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_load_dtype_converts_only_the_plain_float_weights(tmp_path: Path, int8: None) -> None:
    model = Model(tiny_llama())
    transforms.apply(model, "quantization", {"kind": "test-int8"})
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c", model), dtype=torch.bfloat16).model
    assert loaded.tok_emb.weight.dtype == torch.bfloat16
    assert loaded.layers[0].attn.wo.weight.dtype == torch.int8
    assert loaded.layers[0].attn.wo.scale.dtype == torch.float32


def test_weights_must_fit_the_transformed_layout(tmp_path: Path, int8: None) -> None:
    path = save_checkpoint(tmp_path / "c", Model(tiny_llama()))  # plain weights ...
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "quantization": {"kind": "test-int8"}}))  # ... declared int8
    with pytest.raises(TinyLMError, match=r"model.safetensors: (missing|unexpected) tensor"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"sparsity": {"kind": "2:4"}}, r"config.json: unknown section 'sparsity'; this tinylm knows quantization, adapters"),
        ({"quantization": {"kind": "int3"}}, r"config.json: unknown quantization kind 'int3'"),
        ({"adapters": {"rank": 8}}, r"config.json: section 'adapters' needs an object with a \"kind\""),
    ],
    ids=["section", "kind", "no-kind"],
)
def test_unknown_transform_is_one_clear_line(tmp_path: Path, section: dict, message: str) -> None:
    path = save_checkpoint(tmp_path / "c", Model(tiny_gpt2()))
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **section}))
    with pytest.raises(TinyLMError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_plain_checkpoints_declare_nothing(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c", Model(tiny_gpt2()))
    raw = json.loads((path / "config.json").read_text())
    assert not set(raw) & set(transforms.SECTIONS)
    assert transforms.applied(load_checkpoint(path).model) == {}
