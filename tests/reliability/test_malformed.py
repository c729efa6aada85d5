"""A table of malformed configs, resume states and files: each is one clear line, never a traceback, and the
good checkpoint beside it is left exactly as it was."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_llama
from tests.train.conftest import model_config, stream_data
from tinylm.checkpoint import save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.train import TrainConfig, train


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "ckpt", Model(tiny_llama()))


@pytest.mark.parametrize("field, value, words", [
    ("dim", 48.0, "dim = 48.0 is not an integer"),
    ("hidden_dim", -1, "hidden_dim must be positive"),
    ("n_kv_heads", -2, "n_kv_heads must be positive"),
    ("multiple_of", 0, "multiple_of must be positive"),
    ("norm_eps", "tiny", "norm_eps = 'tiny' is not a number"),
    ("n_heads", 0, "n_heads must be positive"),
    ("norm", "batchnorm", "norm = 'batchnorm' is not one of"),
    ("bias", "yes", "bias = 'yes' is not true/false"),
])  # fmt: skip
@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_bad_config_values(ckpt, one_line, field, value, words, engine):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, field: value}))
    one_line(["sample", ckpt, "--engine", engine, "-n", "2"], str(ckpt / "config.json"), words)


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_nan_weights_are_refused_before_sampling(ckpt, one_line, engine):
    sd = load_file(ckpt / "model.safetensors")
    sd["norm.weight"][3] = float("nan")
    save_file(sd, ckpt / "model.safetensors")
    one_line(["sample", ckpt, "--engine", engine, "-n", "2", "--ids", "1 2"], "norm.weight holds NaN/inf")


@pytest.mark.parametrize("argv, words", [
    (["--device", "quantum"], "unknown device 'quantum'"),
    (["--threads", "0"], "--threads must be at least 1"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "sees no CUDA GPU")]))  # fmt: skip
def test_bad_sample_options(ckpt, one_line, argv, words):
    one_line(["sample", ckpt, "-n", "2", *argv], words)


# ---- resume state -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> TrainConfig:
    out = tmp_path_factory.mktemp("good") / "run"
    cfg = TrainConfig(out_dir=str(out), batch_size=4, max_steps=20, lr=3e-3, warmup_steps=2, eval_interval=5,
                      eval_batches=2, log_interval=5, precision="fp32", device="cpu")  # fmt: skip
    train(cfg, stream_data(), model_config(), stop_at=5, quiet=True)
    return cfg


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def _state(last: Path) -> dict:
    return json.loads((last / "train_state.json").read_text())


def _edit_state(last: Path, change) -> None:
    s = _state(last)
    change(s)
    (last / "train_state.json").write_text(json.dumps(s))


def _edit_tensors(file: Path, change) -> None:
    t = load_file(file)
    change(t)
    save_file(t, file)


DAMAGE = {
    "step is text": (lambda last: _edit_state(last, lambda s: s["progress"].update(step="ten")),
                     "progress: field step = 'ten' is not an integer"),
    "negative tokens": (lambda last: _edit_state(last, lambda s: s["progress"].update(tokens=-5)),
                        "tokens negative"),
    "lr is text": (lambda last: _edit_state(last, lambda s: s["train_config"].update(lr="fast")),
                   "lr = 'fast' is not a number"),
    "no progress": (lambda last: _edit_state(last, lambda s: s.pop("progress")), "not a training state"),
    "optimizer without param_groups": (lambda last: _edit_state(last, lambda s: s["optimizer"].pop("param_groups")),
                                       "without valid param_groups"),
    "optimizer betas of a wrong type": (
        lambda last: _edit_state(last, lambda s: s["optimizer"]["param_groups"][0].update(betas="0.9")),
        "betas of the wrong type"),
    "optimizer moments of another shape": (
        lambda last: _edit_tensors(last / "optimizer.safetensors", lambda t: t.update({"0.exp_avg": torch.zeros(3, 5)})),
        "optimizer tensor 0.exp_avg is (3, 5)"),
    "optimizer tensor of no parameter": (
        lambda last: _edit_tensors(last / "optimizer.safetensors", lambda t: t.update({"999.exp_avg": torch.zeros(1)})),
        "belongs to no parameter"),
    "NaN in the optimizer": (
        lambda last: _edit_tensors(last / "optimizer.safetensors", lambda t: t["1.exp_avg_sq"].fill_(float("nan"))),
        "holds NaN/inf"),
    "RNG state of a wrong size": (
        lambda last: _edit_tensors(last / "rng.safetensors", lambda t: t.update(batches=t["batches"][:100].clone())),
        "damaged RNG"),
    "python RNG state of a wrong size": (
        lambda last: _edit_state(last, lambda s: s["rng"]["python"][1].pop()), "damaged RNG"),
    "weights with NaN": (
        lambda last: _edit_tensors(last / "model.safetensors", lambda t: t["norm.weight"].fill_(float("inf"))),
        "holds NaN/inf"),
}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_resume_state_is_one_line_and_kept(good_run, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(good_run.out_dir, out)
    hurt, words = DAMAGE[damage]
    hurt(out / "last")
    before = _files(out / "last")
    with pytest.raises(TinyLMError, match=None) as e:
        train(good_run.replace(out_dir=str(out)), stream_data(), model_config(), resume=True, quiet=True)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert _files(out / "last") == before  # nothing replaced it


def test_nan_weights_or_loss_never_replace_a_good_checkpoint(good_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(good_run.out_dir, out)
    before = (out / "last" / "model.safetensors").read_bytes()

    def poison(model):  # the weights go bad between two evaluations
        with torch.no_grad():
            model.norm.weight.fill_(float("nan"))
        return {}

    with pytest.raises(TinyLMError, match=r"NaN/inf in the .* keeps the last good checkpoint"):
        train(good_run.replace(out_dir=str(out)), stream_data(), model_config(), resume=True, quiet=True,
              on_eval=poison)  # fmt: skip
    assert (out / "last" / "model.safetensors").read_bytes() == before


# ---- files -----------------------------------------------------------------------------------------


def test_exports_never_replace_what_is_not_theirs(good_run, tmp_path, one_line):
    last = Path(good_run.out_dir) / "last"
    before = _files(last)
    one_line(["export", last, "--to", "hf", "--out", last], "inside the checkpoint being exported")
    one_line(["export", last, "--to", "gguf", "--out", last / "model.safetensors"], "inside the checkpoint")
    other = tmp_path / "other"
    shutil.copytree(last, other)
    one_line(["export", last, "--to", "hf", "--out", other], "is a training checkpoint")
    one_line(["export", last, "--to", "gguf", "--out", tmp_path], "is a directory")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    one_line(["export", last, "--to", "hf", "--out", tmp_path / "notes"], "is not a Hugging Face model folder")
    one_line(["import", tmp_path / "notes" / "todo.txt", "--from", "hf", "--out", tmp_path / "x"], "not a folder")
    assert _files(last) == before
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


@pytest.mark.parametrize("offset", [8, 16], ids=["tensor count", "kv count"])
@pytest.mark.parametrize("value", [0, 7, 10**6, 2**63])
def test_gguf_with_damaged_counts(ckpt, tmp_path, one_line, offset, value):
    from tinylm.formats import export_model

    gguf = tmp_path / "m.gguf"
    export_model(ckpt, "gguf", gguf)
    data = bytearray(gguf.read_bytes())
    data[offset : offset + 8] = struct.pack("<Q", value)
    gguf.write_bytes(bytes(data))
    one_line(["import", gguf, "--out", tmp_path / "imported"], str(gguf))
    assert not (tmp_path / "imported").exists()
