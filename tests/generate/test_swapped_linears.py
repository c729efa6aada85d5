"""Any module with nn.Linear's call signature works in every matmul slot, the output head included:
the engine's logits equal Model.forward's for a stand-in quantized Linear and a stand-in LoRA Linear."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.generate.conftest import SHAPES, random_model
from tinylm.generate.engine import TorchEngine
from tinylm.model import Model


class Int8Linear(nn.Module):
    """int8 weights with one scale per output channel, dequantized in forward."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(1, keepdim=True) / 127
        self.register_buffer("qweight", torch.round(w / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight.float() * self.scale, self.bias)


class LoraLinear(nn.Module):
    """A frozen base Linear plus a low-rank update B @ A (B nonzero, so the update shows)."""

    def __init__(self, linear: nn.Linear, rank: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(linear.out_features)
        self.base = linear
        self.A = nn.Parameter(torch.randn(rank, linear.in_features, generator=g) / linear.in_features**0.5)
        self.B = nn.Parameter(torch.randn(linear.out_features, rank, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T) @ self.B.T


def swap_every_linear(model: Model, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Replace every nn.Linear of the model (attention, MLP, output head) by make(linear)."""
    slots = [(parent, name, m) for parent in model.modules() for name, m in parent.named_children()
             if type(m) is nn.Linear]  # fmt: skip
    for parent, name, m in slots:
        setattr(parent, name, make(m))
    return len(slots)


def teacher_forced(model: Model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([seq]))[0]  # (T, vocab)


def engine_logits(engine: TorchEngine, seq: list[int], prompt: int) -> torch.Tensor:
    """The engine's logits after each token from the prompt's last on, feeding seq token by token."""
    out = [engine.prefill([0], [seq[:prompt]])[0]]
    for t in range(prompt, len(seq)):
        out.append(engine.decode([0], [seq[t]])[0])
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("make", [Int8Linear, LoraLinear], ids=["int8", "lora"])
@pytest.mark.parametrize("name", ["llama-mqa-untied", "gpt2"])
def test_swapped_linears_in_every_slot_match_model_forward(name: str, make) -> None:
    cfg = SHAPES[name]
    plain = random_model(cfg)
    model = random_model(cfg)
    n = swap_every_linear(model, make)
    assert n == cfg.n_layers * (5 if cfg.mlp == "swiglu" else 4) + 1  # wqkv, wo, w1, w2 (, w3); the head
    seq = torch.randint(0, cfg.vocab_size, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    want = teacher_forced(model, seq)[19:]
    assert not torch.allclose(want, teacher_forced(plain, seq)[19:], atol=1e-3)  # the swap changes the model
    torch.testing.assert_close(engine_logits(TorchEngine(model), seq, 20), want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("make", [Int8Linear, LoraLinear], ids=["int8", "lora"])
def test_swapped_linears_compiled_match_model_forward(make) -> None:
    cfg = SHAPES["llama-gqa"].replace(n_layers=1)
    model = random_model(cfg)
    swap_every_linear(model, make)
    seq = torch.randint(0, cfg.vocab_size, (30,), generator=torch.Generator().manual_seed(2)).tolist()
    got = engine_logits(TorchEngine(model, compile=True, transpose_weights=True), seq, 10)
    torch.testing.assert_close(got, teacher_forced(model, seq)[9:], atol=1e-4, rtol=1e-4)
