"""Small random models whose greedy output is varied (not one token repeated), and helpers to save them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import save_checkpoint
from tinylm.config import ModelConfig
from tinylm.model import Model

# context >= 210 so 200 greedy tokens fit after a prompt
SHAPES = {
    "llama-gqa": tiny_llama(context_length=256),
    "llama-mqa-untied": tiny_llama(context_length=224, n_kv_heads=1, tie_embeddings=False, n_layers=3),
    "llama-mha-bias": tiny_llama(context_length=240, n_kv_heads=4, bias=True, vocab_size=300),
    "gpt2": tiny_gpt2(context_length=256),
    "gpt2-nobias-untied": tiny_gpt2(context_length=212, bias=False, tie_embeddings=False, n_heads=2),
    "gpt2-exact-gelu": tiny_gpt2(context_length=216, gelu="exact"),
}


def random_model(cfg: ModelConfig, seed: int = 0) -> Model:
    """A model with weights large enough that its logits are far apart: with the training init
    (std 0.02) every next token is nearly uniform and greedy decoding repeats one token."""
    g = torch.Generator().manual_seed(seed)
    model = Model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                fan_in = p.shape[1] if "emb" not in name else 1
                p.copy_(torch.randn(p.shape, generator=g) * 3.0 / fan_in**0.5)
            else:  # norm weights near 1, biases near 0
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def save_random(tmp_path: Path):
    def save(cfg: ModelConfig, tokenizer=None, seed: int = 0) -> Path:
        return save_checkpoint(tmp_path / f"ckpt{seed}", random_model(cfg, seed), tokenizer)

    return save


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
