import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.tokenizer import CharTokenizer


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    model = Model(tiny_llama())
    return save_checkpoint(tmp_path / "ckpt", model, tokenizer=CharTokenizer(list("abc ")))


@pytest.mark.parametrize("cfg", [tiny_llama(), tiny_gpt2(tie_embeddings=False)], ids=["llama", "gpt2-untied"])
def test_round_trip_is_bit_exact(tmp_path: Path, cfg) -> None:
    model = Model(cfg)
    save_checkpoint(tmp_path / "c", model)
    loaded = load_checkpoint(tmp_path / "c").model
    assert loaded.config == cfg
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == cfg.tie_embeddings
    idx = torch.randint(0, cfg.vocab_size, (1, 12))
    assert torch.equal(model.eval()(idx), loaded(idx))


def test_tokenizer_travels_with_the_checkpoint(ckpt: Path) -> None:
    tok = load_checkpoint(ckpt).tokenizer
    assert tok is not None and tok.decode(tok.encode("cab a")) == "cab a"


def test_save_replaces_atomically_and_keeps_old_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "c"
    first = Model(tiny_gpt2())
    save_checkpoint(path, first)

    def crash(_: Path) -> None:
        raise RuntimeError("disk died mid-save")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, Model(tiny_gpt2(n_layers=1)), extra=crash)
    survivor = load_checkpoint(path).model
    assert torch.equal(survivor.tok_emb.weight, first.tok_emb.weight)
    assert sorted(os.listdir(tmp_path)) == ["c"]  # no temp directories left behind


def test_saved_files_are_readable_by_others(ckpt: Path) -> None:
    assert (ckpt / "model.safetensors").stat().st_mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _edit_config(ckpt: Path, **changes) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def _edit_weights(ckpt: Path, fn) -> None:
    sd = load_file(ckpt / "model.safetensors")
    fn(sd)
    save_file(sd, ckpt / "model.safetensors")


BAD = {
    "missing dir": (lambda c: c.rename(c.with_name("gone")), "no checkpoint directory"),
    "missing config": (lambda c: (c / "config.json").unlink(), r"config\.json: missing"),
    "config not json": (lambda c: (c / "config.json").write_text("{oops"), "not valid JSON"),
    "unknown field": (lambda c: _edit_config(c, warp_drive=True), "unknown config field.*warp_drive"),
    "config/weights mismatch": (lambda c: _edit_config(c, dim=64, hidden_dim=96), "has shape"),
    "missing weights": (lambda c: (c / "model.safetensors").unlink(), r"model\.safetensors: missing"),
    "truncated": (lambda c: _truncate(c / "model.safetensors"), "truncated or corrupt"),
    "corrupt header": (lambda c: _scribble(c / "model.safetensors"), "truncated or corrupt"),
    "missing tensor": (lambda c: _edit_weights(c, lambda sd: sd.pop("layers.1.mlp.w3.weight")),
                       r"missing tensor\(s\) layers\.1\.mlp\.w3\.weight"),
    "extra tensor": (lambda c: _edit_weights(c, lambda sd: sd.__setitem__("spare", torch.zeros(2))),
                     r"unexpected tensor\(s\) spare"),
    "wrong shape": (lambda c: _edit_weights(c, lambda sd: sd.__setitem__("norm.weight", torch.ones(31))),
                    r"norm\.weight has shape \(31,\)"),
    "wrong dtype": (lambda c: _edit_weights(c, lambda sd: sd.__setitem__("norm.weight", torch.ones(32, dtype=torch.int32))),
                    "dtype int32"),
    "vocab mismatch": (lambda c: _edit_config(c, vocab_size=2) or _edit_weights(
        c, lambda sd: sd.__setitem__("tok_emb.weight", sd["tok_emb.weight"][:2].clone())), "tokenizer has 5 tokens"),
}  # fmt: skip


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _scribble(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[8:40] = b"\xff" * 32
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_gives_one_clear_line(ckpt: Path, case: str) -> None:
    damage, message = BAD[case]
    damage(ckpt)
    with pytest.raises(TinyLMError, match=message) as err:
        load_checkpoint(ckpt)
    assert "\n" not in str(err.value)
