"""An operating-system error (no space, read-only) injected at each write of a save, an export, an import
and `prepare`: one line naming the path and the fix, the previous output intact, nothing half-written."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import tinylm.checkpoint
import tinylm.formats.hf_folder
from tests.conftest import tiny_llama
from tests.train.conftest import model_config, stream_data
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.fileio import recover_dir
from tinylm.formats import export_model
from tinylm.model import Model
from tinylm.train import TrainConfig, train

ERRORS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
          errno.EACCES: "permission denied"}  # fmt: skip


class Disk:
    """Fails the `fail_at`-th write-like call (open for writing, mkdir, temp files, fsync, rename, and
    safetensors' own writer) with `code` (and every later one if `sticky`); counts them all."""

    def __init__(self, monkeypatch, fail_at: int, code: int, sticky: bool = False):
        self.calls, self.fail_at, self.code, self.sticky = 0, fail_at, code, sticky
        real_open = builtins.open

        def open_(file, mode="r", *a, **kw):
            if any(c in mode for c in "wax+"):
                self.hit(file)
            return real_open(file, mode, *a, **kw)

        monkeypatch.setattr(builtins, "open", open_)
        for mod, name in ((os, "replace"), (os, "fsync"), (os, "mkdir"), (tempfile, "mkdtemp"), (tempfile, "mkstemp")):
            monkeypatch.setattr(mod, name, self.wrap(getattr(mod, name)))
        for mod in (tinylm.checkpoint, tinylm.formats.hf_folder):
            monkeypatch.setattr(mod, "save_file", self.wrap(mod.save_file, rust=True))

    def hit(self, what=None, rust: bool = False) -> None:
        self.calls += 1
        if self.calls == self.fail_at or (self.sticky and self.calls > self.fail_at > 0):
            if rust:  # how safetensors reports it
                raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(self.code)} (os error {self.code})")
            raise OSError(self.code, os.strerror(self.code), str(what) if what is not None else None)

    def wrap(self, real, rust: bool = False):
        def call(*args, **kw):
            self.hit(args[0] if args and isinstance(args[0], str | Path) else None, rust)
            return real(*args, **kw)

        return call


def every_failure(monkeypatch, action, code: int):
    """Run `action` once failing at each of its writes in turn; yield the one-line error message, or None
    where the failed step was best-effort (a directory fsync, a mkdir of a folder that exists)."""
    with monkeypatch.context() as m:
        disk = Disk(m, 0, code)
        action()
    assert disk.calls >= 3
    for k in range(1, disk.calls + 1):
        with monkeypatch.context() as m:
            Disk(m, k, code)
            try:
                action()
            except TinyLMError as e:
                assert "\n" not in str(e)
                yield str(e)
                continue
        yield None


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("code", ERRORS)
def test_checkpoint_save(tmp_path, monkeypatch, code):
    old, new = Model(tiny_llama()), Model(tiny_llama(norm_eps=1e-6))
    ckpt = save_checkpoint(tmp_path / "last", old)
    errors = 0
    for msg in every_failure(monkeypatch, lambda: save_checkpoint(ckpt, new), code):
        assert leftovers(tmp_path) == [], msg
        cfg = load_checkpoint(recover_dir(ckpt)).config
        if msg is None:
            assert cfg == new.config
        else:
            errors += 1
            assert msg.startswith(str(ckpt)) and ERRORS[code] in msg, msg
            assert cfg in (old.config, new.config), msg  # whole: old, or new if only the cleanup failed
        save_checkpoint(ckpt, old)
    assert errors >= 5


@pytest.mark.parametrize("target, out", [("gguf", "m.gguf"), ("hf", "hf"), ("llama2c", "m.bin")])
def test_exports(tmp_path, monkeypatch, target, out):
    ckpt = save_checkpoint(tmp_path / "ckpt", Model(tiny_llama()))
    dest = tmp_path / "out" / out
    dest.parent.mkdir()
    for msg in every_failure(monkeypatch, lambda: export_model(ckpt, target, dest), errno.ENOSPC):
        if msg is None:
            assert [p.name for p in dest.parent.iterdir()] == [out]
        else:
            assert "no space left on device" in msg and str(tmp_path / "out") in msg, msg
            assert list(dest.parent.iterdir()) == [], msg  # nothing, not half a file
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink(missing_ok=True)


def test_prepare(tmp_path, monkeypatch):
    from tinylm.data.prepare import prepare

    text = tmp_path / "t.txt"
    text.write_text("".join(f"document {i} says hello to the world\n\n" for i in range(40)))
    out = tmp_path / "out"
    for msg in every_failure(monkeypatch, lambda: prepare([text], out, tokenizer="char", workers=0, progress=False),
                             errno.EROFS):  # fmt: skip
        if msg is None:
            assert (out / "manifest.json").is_file()
        else:
            assert msg.startswith(str(out)) and "read-only file system" in msg, msg
        shutil.rmtree(out, ignore_errors=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"], msg


def test_import_and_the_cli_line(tmp_path, monkeypatch, capsys):
    ckpt = save_checkpoint(tmp_path / "ckpt", Model(tiny_llama()))
    export_model(ckpt, "gguf", tmp_path / "m.gguf")
    with monkeypatch.context() as m:
        Disk(m, 1, errno.EACCES, sticky=True)
        assert main(["import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "imported")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm import: error: ") and "permission denied" in err and "\n" not in err, err
    assert not (tmp_path / "imported").exists()


def test_no_space_at_a_training_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), batch_size=4, max_steps=4, lr=3e-3, warmup_steps=1,
                      eval_interval=2, eval_batches=1, log_interval=2, precision="fp32", device="cpu")  # fmt: skip
    calls = []
    real = tinylm.checkpoint.save_file

    def save_file(tensors, path, *a, **kw):  # last/ and best/ at step 2, then last/ at step 4 fails
        calls.append(path)
        if len(calls) == 3:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(tinylm.checkpoint, "save_file", save_file)
    with pytest.raises(TinyLMError, match="run/last: no space left on device; free some space"):
        train(cfg, stream_data(), model_config(), quiet=True)
    last = tmp_path / "run" / "last"
    assert json.loads((last / "train_state.json").read_text())["progress"]["step"] == 2
    assert leftovers(last.parent) == [] and torch.isfinite(load_checkpoint(last).model.norm.weight).all()
    shutil.rmtree(tmp_path / "run")
