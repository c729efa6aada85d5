"""`tinylm quantize` end to end: a checkpoint that declares its scheme, loads without dequantizing,
runs in both engines, exports to GGUF as its blocks; and bad input, one line each."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_llama
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.cli import main
from tinylm.formats import export_model, import_model
from tinylm.generate.engine import TorchEngine
from tinylm.generate.loop import generate_ids
from tinylm.generate.sampling import Sampler, SamplingParams
from tinylm.model import Model
from tinylm.quantize import q4_0, q8_0, schemes
from tinylm.quantize.linear import QuantLinear, stored_parts
from tinylm.runtime import NumpyModel


@pytest.fixture
def float_ckpt(tmp_path):
    model = Model(tiny_llama(dim=64, hidden_dim=128, tie_embeddings=False)).eval()
    return save_checkpoint(tmp_path / "float", model)


@pytest.mark.parametrize("scheme", list(schemes.SCHEMES))
def test_quantize_writes_a_checkpoint_that_loads_quantized(scheme, float_ckpt, tmp_path, capsys):
    out = tmp_path / scheme
    assert main(["quantize", str(float_ckpt), "--scheme", scheme, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layers.1.mlp.w2.weight" in printed and "x smaller" in printed
    spec = json.loads((out / "config.json").read_text())["quantization"]
    assert spec["kind"] == scheme and "lm_head" in spec["keep"]
    size = (out / "model.safetensors").stat().st_size / (float_ckpt / "model.safetensors").stat().st_size
    assert size < 0.6  # the float embedding and head are a large share of this tiny model
    ckpt = load_checkpoint(out)
    assert isinstance(ckpt.model.layers[0].attn.wqkv, QuantLinear)
    again = tmp_path / "again"
    save_checkpoint(again, ckpt.model)  # save -> load -> save: the same tensors, bit for bit
    first, second = (load_file(p / "model.safetensors") for p in (out, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert {t.dtype for t in first.values()} >= {torch.int8 if scheme in ("int8", "q8_0") else torch.uint8}
    greedy = Sampler(SamplingParams(temperature=0))
    engines = (TorchEngine(ckpt.model), NumpyModel.from_checkpoint(out, activations="float32"))  # exact
    ids = [[t.tolist() for t in generate_ids(e, [[1, 2, 3]], 10, greedy)] for e in engines]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(("scheme", "mod"), [("q8_0", q8_0), ("q4_0", q4_0)])
def test_gguf_round_trip_keeps_the_blocks(scheme, mod, float_ckpt, tmp_path):
    main(["quantize", str(float_ckpt), "--scheme", scheme, "--out", str(tmp_path / "q")])
    export_model(tmp_path / "q", "gguf", tmp_path / "m.gguf")
    imported = import_model(tmp_path / "m.gguf", tmp_path / "back")
    assert any(f"kept the {scheme} blocks" in n for n in imported.notes)
    before, after = (stored_parts(load_checkpoint(p).model, scheme) for p in (tmp_path / "q", tmp_path / "back"))
    assert before.keys() == after.keys() and len(before) == 10
    assert all(np.array_equal(before[k][p], after[k][p]) for k in before for p in before[k])
    t = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}["blk.0.ffn_down.weight"]
    assert np.array_equal(np.asarray(t.data).reshape(64, -1), mod.to_gguf(before["layers.0.mlp.w2.weight"]))


def test_bad_input_is_one_line(float_ckpt, tmp_path, capsys):
    def error(*args: str) -> str:
        assert main(["quantize", *args]) == 1
        return capsys.readouterr().err.strip()

    assert "unknown quantization scheme 'q3'" in error(str(float_ckpt), "--scheme", "q3", "--out", str(tmp_path / "x"))
    assert "fixed group size" in error(str(float_ckpt), "--scheme", "q4_0", "--group-size", "64", "--out", str(tmp_path / "x"))
    (tmp_path / "notes.txt").write_text("keep me")
    assert "is not a tinylm checkpoint" in error(str(float_ckpt), "--scheme", "q8_0", "--out", str(tmp_path / "notes.txt"))
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    odd = save_checkpoint(tmp_path / "odd", Model(tiny_llama(dim=64, hidden_dim=48)))
    msg = error(str(odd), "--scheme", "q8_0", "--out", str(tmp_path / "x"))
    assert "tensor layers.0.mlp.w2.weight: rows of 48" in msg and "\n" not in msg
    main(["quantize", str(float_ckpt), "--scheme", "int8", "--out", str(tmp_path / "q")])
    capsys.readouterr()
    assert "already quantized" in error(str(tmp_path / "q"), "--scheme", "q4_0", "--out", str(tmp_path / "x"))
    weights = tmp_path / "q" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "corrupt" in error(str(tmp_path / "q"), "--scheme", "q4_0", "--out", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_eval_data_compares_with_the_original(tmp_path, capsys):
    from tinylm.tokenizer import train_tokenizer

    text = "the cat sat on the mat. the dog ran to the cat. " * 40
    (tmp_path / "heldout.txt").write_text(text)
    tok = train_tokenizer("char", [text])
    model = Model(tiny_llama(dim=64, hidden_dim=128, vocab_size=tok.vocab_size, context_length=64)).eval()
    save_checkpoint(tmp_path / "float", model, tok)
    argv = ["quantize", str(tmp_path / "float"), "--scheme", "q8_0", "--out", str(tmp_path / "q"),
            "--eval-data", str(tmp_path / "heldout.txt"), "--eval-tokens", "500"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and str(tmp_path / "q") in printed.splitlines()[-3]
