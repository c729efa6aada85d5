"""Two processes under torchrun (gloo, CPU) train exactly what one process does on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tinylm.cli import main
from tinylm.data.shards import write_shard
from tinylm.train.metrics import read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data, out, batch):
    # llama: no biases. (A key bias gets no gradient at all, and AdamW turns its float noise into full-size
    # steps of either sign, so it would differ between any two runs that sum in another order.)
    return ["train", "--data", str(data), "--out", str(out), "--family", "llama", "--layers", "2", "--dim", "32",
            "--heads", "4", "--context", "16", "--batch-size", str(batch), "--steps", "6", "--lr", "3e-3",
            "--warmup-steps", "2", "--eval-interval", "3", "--eval-batches", "4", "--precision", "fp32",
            "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "shards"  # bare llm.c-style shards: no manifest, vocabulary from the largest id
    write_shard(data / "walk_train_000000.bin", np.cumsum(rng.integers(1, 3, 3000)) % 20)
    write_shard(data / "walk_val_000000.bin", np.cumsum(rng.integers(1, 3, 400)) % 20)
    assert main(_args(data, tmp_path / "one", batch=8)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "tinylm", *_args(data, tmp_path / "two", batch=4)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(tmp_path / "one" / "last" / "model.safetensors")
    two = load_file(tmp_path / "two" / "last" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:  # gloo averages the two half-batch gradients in another order than one batch's mean
        torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=1e-5)
    val_one, val_two = ([r["val_loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if "val_loss" in r]
                        for run in ("one", "two"))  # fmt: skip
    assert len(val_one) == 2 and val_one[1] < val_one[0]  # it learned
    assert val_two == pytest.approx(val_one, rel=1e-5)  # evaluation is shared out between the processes too
