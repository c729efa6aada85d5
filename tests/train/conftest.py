from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_gpt2
from tinylm.tokenizer import CharTokenizer
from tinylm.train import TrainConfig, TrainData
from tinylm.train.batches import TokenWindows

CONTEXT = 16


def stream_data(n: int = 4000, vocab: int = 20, seed: int = 0) -> TrainData:
    """A learnable token stream: a random walk of +1/+2 steps mod vocab, 90/10 split."""
    steps = np.random.default_rng(seed).integers(1, 3, size=n)
    ids = (np.cumsum(steps) % vocab).astype(np.uint16)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(vocab - 1)])  # vocab_size == vocab
    cut = int(0.9 * n)
    return TrainData(TokenWindows(ids[:cut], CONTEXT), TokenWindows(ids[cut:], CONTEXT, "val"), tok, "walk")


def model_config(**kw):
    return tiny_gpt2(vocab_size=20, context_length=CONTEXT, **kw)


@pytest.fixture
def cfg(tmp_path) -> TrainConfig:
    """A few seconds of training at most: tiny batches, fp32 (bit-exact comparisons), no warmup."""
    return TrainConfig(out_dir=str(tmp_path / "run"), batch_size=4, max_steps=20, lr=3e-3, warmup_steps=2,
                       eval_interval=10, eval_batches=2, log_interval=5, precision="fp32", device="cpu")  # fmt: skip
