from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinylm.config import ModelConfig

# Tests use tiny models: one thread is as fast as several, and it does not collapse when other processes keep
# the cores busy (OpenMP threads spin-wait, see tinylm.threads). Commands run in tests may set their own.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (CI clones main with ../shared next to it)."""
    p = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not p.is_dir():
        pytest.skip("../shared/data is not present")
    return p


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_llama(**kw) -> ModelConfig:
    """A few-thousand-parameter Llama-family model (GQA, RoPE, SwiGLU, RMSNorm)."""
    base = dict(vocab_size=67, context_length=32, n_layers=2, n_heads=4, n_kv_heads=2, dim=32, hidden_dim=48,
                norm="rmsnorm", positions="rope", mlp="swiglu", bias=False, tie_embeddings=True, family="llama")
    return ModelConfig(**{**base, **kw})


def tiny_gpt2(**kw) -> ModelConfig:
    """A few-thousand-parameter GPT-2-family model."""
    base = dict(vocab_size=67, context_length=32, n_layers=2, n_heads=4, dim=32, norm="layernorm",
                positions="learned", mlp="gelu", bias=True, tie_embeddings=True, family="gpt2")
    return ModelConfig(**{**base, **kw})
