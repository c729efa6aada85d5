from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.conftest import cfg, model_config, stream_data  # noqa: F401 (cfg: the fixture)
from tinylm.train import TrainConfig, train

VOCAB = 20  # stream_data's tokenizer and model_config's vocabulary


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    """A 3-layer teacher trained briefly on the random walk (so its distributions are peaked, as a real
    teacher's), saved with the data's tokenizer; the students are model_config() (2 layers)."""
    out = tmp_path_factory.mktemp("teacher")
    settings = TrainConfig(out_dir=str(out), batch_size=8, max_steps=40, lr=3e-3, warmup_steps=2, eval_interval=40,
                           eval_batches=1, precision="fp32", device="cpu", seed=7)  # fmt: skip
    train(settings, stream_data(), model_config(n_layers=3), quiet=True)
    return out / "last"
