"""The NumPy trainer against the torch trainer: same steps, same checkpoints, resumable by each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tests.train.conftest import CONTEXT, stream_data
from tinylm.checkpoint import load_checkpoint
from tinylm.cli import main
from tinylm.model import Model
from tinylm.nptrain.trainer import Data, Windows
from tinylm.nptrain.trainer import train as np_train
from tinylm.runtime import NumpyModel, load_weights
from tinylm.train import TrainConfig, batches, state, train
from tinylm.train.metrics import METRICS_FILE, read_metrics
from tinylm.train.order import Sampler, eval_rows

FAMILIES = {"llama": tiny_llama(vocab_size=20, context_length=CONTEXT),
            "gpt2": tiny_gpt2(vocab_size=20, context_length=CONTEXT, tie_embeddings=False)}  # fmt: skip


def settings(out: Path, **kw) -> TrainConfig:
    """fp32 on the CPU, clipping active (the gradient norms are > 1), weight decay, warmup + cosine."""
    base = dict(out_dir=str(out), batch_size=4, max_steps=10, lr=3e-3, warmup_steps=2, eval_interval=5,
                eval_batches=2, log_interval=1, precision="fp32", device="cpu")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    """The same token stream for both trainers (torch TrainData, NumPy Data)."""
    td = stream_data()
    return td, Data(Windows(td.train.tokens, CONTEXT), Windows(td.val.tokens, CONTEXT), td.tokenizer, "walk")


def initial_weights(cfg: TrainConfig, mc) -> dict[str, np.ndarray]:
    """What the torch trainer starts from (it seeds torch with cfg.seed, then builds the model)."""
    torch.manual_seed(cfg.seed)
    return {k: v.detach().numpy().copy() for k, v in Model(mc).state_dict().items()}


def losses(out: Path, key: str = "loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(out / METRICS_FILE) if key in r}


def assert_same_run(a: Path, b: Path, tol: float) -> None:
    for key in ("loss", "val_loss", "grad_norm"):
        la, lb = losses(a, key), losses(b, key)
        assert la.keys() == lb.keys() and la
        np.testing.assert_allclose([lb[s] for s in la], list(la.values()), rtol=tol)
    wa, wb = load_weights(a / "last"), load_weights(b / "last")
    assert wa.keys() == wb.keys()
    for k in wa:
        diff = np.abs(wa[k] - wb[k])
        if k.endswith("wqkv.bias"):
            # the key bias has no gradient (it adds the same q.b to every score of a row, which softmax
            # ignores), so what AdamW makes of its rounding noise is arbitrary: small, not equal
            cfg = load_checkpoint(a / "last").config
            keys = slice(cfg.dim, cfg.dim + cfg.kv_heads * cfg.head_dim)
            assert diff[keys].max() < 1e-4, k
            diff[keys] = 0
        assert diff.max() <= tol * np.abs(wa[k]).max(), k


@pytest.mark.parametrize(("family", "options"), [("llama", {"schedule": "wsd"}),
                                                  ("gpt2", {"batch_tokens": 2 * 4 * CONTEXT})])  # fmt: skip
def test_ten_adamw_steps_equal_the_torch_trainer(tmp_path, data, family, options):
    """Same losses, gradient norms, validation losses and weights; llama with the WSD schedule, gpt2
    (untied head, biases) with two micro-batches of gradient accumulation per step."""
    mc = FAMILIES[family]
    cfg = settings(tmp_path / "torch", **options)
    train(cfg, data[0], mc, quiet=True)
    np_train(cfg.replace(out_dir=str(tmp_path / "numpy")), data[1], mc, weights=initial_weights(cfg, mc), quiet=True)
    assert_same_run(tmp_path / "torch", tmp_path / "numpy", 1e-4)


def test_resume_across_trainers_continues_the_run(tmp_path, data):
    """20 NumPy steps then 20 torch steps (and the reverse) retrace an uninterrupted 40-step run."""
    mc = FAMILIES["llama"]
    cfg = settings(tmp_path / "whole", max_steps=40, eval_interval=10)
    w0 = initial_weights(cfg, mc)
    np_train(cfg, data[1], mc, weights=w0, quiet=True)
    np_then_torch, torch_then_np = cfg.replace(out_dir=str(tmp_path / "a")), cfg.replace(out_dir=str(tmp_path / "b"))
    np_train(np_then_torch, data[1], mc, weights=w0, stop_at=20, quiet=True)
    train(np_then_torch, data[0], mc, resume=True, quiet=True)
    train(torch_then_np, data[0], mc, stop_at=20, quiet=True)
    np_train(torch_then_np, data[1], resume=True, quiet=True)
    for out in (tmp_path / "a", tmp_path / "b"):
        assert state.Saved.load(out / "last").progress.step == 40
        assert_same_run(tmp_path / "whole", out, 1e-4)


def test_numpy_resume_is_bit_exact(tmp_path, data):
    mc = FAMILIES["gpt2"]
    whole, split = settings(tmp_path / "whole", max_steps=20), settings(tmp_path / "split", max_steps=20)
    np_train(whole, data[1], mc, quiet=True)
    np_train(split, data[1], mc, stop_at=7, quiet=True)
    np_train(split, data[1], resume=True, quiet=True)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    split_val = losses(tmp_path / "split", "val_loss")
    assert split_val.pop(7)  # the interrupted run evaluated where it stopped
    assert losses(tmp_path / "whole", "val_loss") == split_val
    wa, wb = load_weights(tmp_path / "whole" / "last"), load_weights(tmp_path / "split" / "last")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_data_order_is_torch_generators_draws():
    """The one data order (tinylm.train.order) is torch.randint's from a seeded torch.Generator, and its
    state torch's bytes, so runs saved with the torch generator continue with the same batches."""
    for size, accum, seed in [(1000, 1, 1337), (3000, 3, 0), (2**28 - 3, 1, 2**40 + 3), (2**28 + 5, 2, 7), (50, 1, -1)]:
        g, n = torch.Generator().manual_seed(seed), Sampler(size, 8, accum, seed=seed)
        for _ in range(3):
            expected = torch.randint(size, (accum * 8,), generator=g).numpy()
            assert np.array_equal(np.concatenate(n.step()), expected)
            assert np.array_equal(g.get_state().numpy(), n.get_state())
        other = Sampler(size, 8, accum)  # a state handed over from torch draws on as torch does
        other.set_state(g.get_state().numpy())
        assert np.array_equal(np.concatenate(other.step()), torch.randint(size, (accum * 8,), generator=g).numpy())
    ranks = [Sampler(100, 4, 2, rank=r, world=3, seed=5).step() for r in range(3)]  # each process its slice
    whole = torch.randint(100, (2 * 3 * 4,), generator=torch.Generator().manual_seed(5)).numpy()
    assert np.array_equal(np.concatenate([ranks[r][m] for m in range(2) for r in range(3)]), whole)
    for size in (2, 101, 99991):
        expected = [r.numpy() for r in batches.eval_rows(size, 4, 5)]
        assert all(np.array_equal(a, b) for a, b in zip(expected, eval_rows(size, 4, 5), strict=True))


# Put on the path of a child process, it makes every `import torch` (and torch.*) fail
NO_TORCH = """
import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")


sys.meta_path.insert(0, NoTorch())
"""


def test_cli_trains_where_torch_cannot_be_imported(tmp_path):
    """`tinylm train --engine numpy --threads 2` (a worker process beside the main one) where importing
    torch fails: it trains, evaluates and writes a checkpoint that torch then loads and resumes."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TORCH, encoding="utf-8")
    ids = (np.cumsum(np.random.default_rng(0).integers(1, 3, 4000)) % 20).astype(np.uint16)  # a noisy walk
    text = tmp_path / "walk.txt"
    text.write_text("".join(chr(ord("a") + i) for i in ids), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", "--data", str(text), "--tokenizer", "char", "--out", str(out), "--layers", "1", "--dim", "16",
            "--heads", "2", "--context", "16", "--batch-size", "8", "--steps", "40", "--lr", "1e-2",
            "--warmup-steps", "2", "--eval-batches", "2", "--threads", "2", "--engine", "numpy", "--quiet"]  # fmt: skip
    src = Path(__file__).resolve().parents[2] / "src"
    env = {"PYTHONPATH": f"{blocker}:{src}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert "torch is blocked" in probe.stderr  # the blocker works in the child
    done = subprocess.run([sys.executable, "-m", "tinylm", *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    # a command that needs torch says so in one line instead of breaking the whole CLI
    other = subprocess.run([sys.executable, "-m", "tinylm", "quantize", str(out / "last"), "--scheme", "q8_0"],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert other.returncode == 1 and other.stderr.strip().count("\n") == 0 and "torch" in other.stderr, other.stderr
    saved = state.Saved.load(out / "last")
    assert saved.progress.step == 40 and saved.progress.best_val_loss < np.log(20) - 0.5  # it learned the walk
    torch_loads_it_and_resumes(out, "abcbcd", 42)


def test_cli_engine_numpy_writes_a_checkpoint_both_engines_load(tmp_path, capsys):
    text = tmp_path / "story.txt"
    words = np.random.default_rng(0).choice(["Once", "upon", "a", "time", "the", "cat", "sat", "."], 4000)
    text.write_text(" ".join(words), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", "--data", str(text), "--tokenizer", "char", "--out", str(out), "--family", "llama",
            "--layers", "1", "--dim", "32", "--heads", "4", "--kv-heads", "2", "--context", "32", "--batch-size", "4",
            "--steps", "6", "--eval-interval", "3", "--eval-batches", "2", "--engine", "numpy"]  # fmt: skip
    assert main(args) == 0
    assert "with NumPy" in capsys.readouterr().out
    for f in ("metrics.jsonl", "loss.png", "last/optimizer.safetensors", "best/model.safetensors"):
        assert (out / f).is_file(), f
    torch_loads_it_and_resumes(out, "Once upon a time", 8)


def torch_loads_it_and_resumes(out: Path, text: str, steps: int) -> None:
    """A NumPy run's checkpoint: torch's logits equal the NumPy runtime's, and the torch trainer resumes it."""
    torch_model, np_model = load_checkpoint(out / "last"), NumpyModel.from_checkpoint(out / "last")
    ids = torch_model.tokenizer.encode(text)
    with torch.no_grad():
        want = torch_model.model(torch.tensor([ids]))[0, -1].numpy()
    np.testing.assert_allclose(np_model.prefill([0], [ids])[0], want, rtol=1e-4, atol=1e-5)
    args = ["train", "--out", str(out), "--resume", "--steps", str(steps), "--quiet", "--precision", "fp32"]
    assert main(args) == 0
    assert state.Saved.load(out / "last").progress.step == steps
