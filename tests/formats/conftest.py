"""Fixtures for the format tests: small trained tokenizers and checkpoints with non-trivial weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinylm.checkpoint import save_checkpoint
from tinylm.config import ModelConfig
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer, train_tokenizer


@pytest.fixture(scope="session")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:400]


@pytest.fixture(scope="session")
def sp_tok(stories) -> Tokenizer:
    pytest.importorskip("sentencepiece")
    return train_tokenizer("sentencepiece", stories[:300], vocab_size=400)


@pytest.fixture(scope="session")
def bpe_tok(stories) -> Tokenizer:
    return train_tokenizer("bpe", stories[:300], vocab_size=400, bos=True)


def make_model(cfg: ModelConfig, seed: int = 0) -> Model:
    """A model whose norm weights and biases are random too, so a mix-up of any two tensors shows."""
    torch.manual_seed(seed)
    model = Model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return model


def save(path: Path, cfg: ModelConfig, tok: Tokenizer | None = None, seed: int = 0) -> Model:
    model = make_model(cfg, seed)
    save_checkpoint(path, model, tok)
    return model


def logits(model: torch.nn.Module, vocab_size: int, length: int = 16) -> torch.Tensor:
    idx = torch.randint(0, vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(idx)
    return (out if isinstance(out, torch.Tensor) else out.logits).float()
