"""Fixtures for the evaluation tests: Shakespeare as documents, a character tokenizer, random and
briefly trained tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import save_checkpoint
from tinylm.model import Model
from tinylm.tokenizer import CharTokenizer, Tokenizer, train_tokenizer

FAMILIES = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.fixture(scope="session")
def speeches(shared_data) -> list[str]:
    """The first speeches of tiny Shakespeare (split on blank lines, as `tinylm prepare` does)."""
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    return [d.strip() for d in text.split("\n\n") if d.strip()]


@pytest.fixture(scope="session")
def char_tok(speeches) -> Tokenizer:
    return CharTokenizer.train(speeches)


@pytest.fixture(scope="session")
def bpe_tok(speeches) -> Tokenizer:
    return train_tokenizer("bpe", speeches, vocab_size=300, bos=True)


def random_checkpoint(path: Path, family: str, tok: Tokenizer | None, seed: int = 0, **kw) -> Model:
    """A checkpoint with random weights (norms and biases random too) for `tok`'s vocabulary."""
    torch.manual_seed(seed)
    model = Model(FAMILIES[family](vocab_size=tok.vocab_size if tok else 67, **kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    save_checkpoint(path, model, tok)
    return model


@pytest.fixture(scope="session")
def trained(tmp_path_factory, speeches, char_tok) -> Path:
    """A character-level GPT-2 (context 16) trained for a few seconds on Shakespeare: it predicts better
    from a few characters of context than from none."""
    from tinylm.train import TrainConfig, TrainData, train
    from tinylm.train.batches import TokenWindows

    ids = np.array([i for d in speeches for i in char_tok.encode_document(d)], dtype=np.uint16)
    cut = int(0.9 * ids.size)
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(out_dir=str(out), batch_size=16, max_steps=100, lr=3e-3, warmup_steps=10, eval_interval=100,
                      eval_batches=2, log_interval=50, precision="fp32", device="cpu", seed=0)  # fmt: skip
    data = TrainData(TokenWindows(ids[:cut], 16), TokenWindows(ids[cut:], 16, "val"), char_tok, "shakespeare")
    train(cfg, data, tiny_gpt2(vocab_size=char_tok.vocab_size, context_length=16, dim=48), quiet=True)
    return out / "last"
