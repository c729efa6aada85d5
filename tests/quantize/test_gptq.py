"""GPTQ: lower output error than round-to-nearest on the same grid, exactly round-to-nearest when the
inputs are uncorrelated, damping that rescues a bad Hessian; `tinylm quantize --scheme gptq-*` writes
a checkpoint in the q4_0 / int4 formats that loads, runs and exports to GGUF as its blocks."""

from __future__ import annotations

import json
import string

import gguf
import numpy as np
import pytest
import torch

from tests.conftest import tiny_llama
from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.formats import gguf_format
from tinylm.formats.common import split_qkv
from tinylm.model import Model
from tinylm.quantize import int4, q4_0
from tinylm.quantize.calibrate import recording
from tinylm.quantize.gptq import gptq
from tinylm.quantize.linear import QuantLinear, stored_parts
from tinylm.runtime import NumpyModel
from tinylm.tokenizer.char import CharTokenizer

MODULES = {"q4_0": q4_0, "int4": int4}
CASES = [("q4_0", 32), ("int4", 32), ("int4", 128)]


def correlated_inputs(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """Inputs whose channels are correlated and unequal in size, as a layer's real inputs are."""
    mix = rng.standard_normal((n, n)).astype(np.float32) / np.sqrt(n)
    return (rng.standard_normal((rows, n)).astype(np.float32) @ mix) * rng.uniform(0.2, 3, n).astype(np.float32)


@pytest.mark.parametrize(("scheme", "group"), CASES)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_has_lower_output_error_than_round_to_nearest(scheme, group, act_order):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 256)).astype(np.float32)
    x = correlated_inputs(rng, 1024, 256)
    mod = MODULES[scheme]
    ours = mod.form(gptq(w, x.T @ x, scheme, group, act_order=act_order).parts, group).dequantize()
    rtn = mod.form(mod.quantize(w, group), group).dequantize()
    err_gptq, err_rtn = (np.linalg.norm(x @ w.T - x @ q.T) for q in (ours, rtn))
    assert err_gptq < 0.95 * err_rtn


@pytest.mark.parametrize(("scheme", "group"), CASES)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_with_identity_hessian_is_round_to_nearest(scheme, group, act_order):
    w = np.random.default_rng(1).standard_normal((40, 256)).astype(np.float32)
    w[3, :32] = 0  # an all-zero group
    ours = gptq(w, np.eye(256), scheme, group, act_order=act_order).parts
    rtn = MODULES[scheme].quantize(w, group)
    assert ours.keys() == rtn.keys()
    for k in rtn:
        assert ours[k].dtype == rtn[k].dtype and np.array_equal(ours[k], rtn[k]), k


def test_a_hessian_that_is_not_positive_definite_gets_more_damping():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    x = rng.standard_normal((8, 64)).astype(np.float32)  # 8 samples: rank 8 of 64
    h = x.T @ x - 0.2 * np.diag(np.diag(x.T @ x))  # and indefinite
    r = gptq(w, h, "q4_0", 32)
    assert r.tries > 1 and r.damp > 0.01
    assert np.isfinite(q4_0.form(r.parts).dequantize()).all()
    with pytest.raises(TinyLMError, match="singular"):
        gptq(w, -np.eye(64), "q4_0", 32)


def quantize(ckpt, calib, out, *extra: str) -> int:
    return main(["quantize", str(ckpt), "--out", str(out), "--calibration", str(calib), "--samples", "8", *extra])


def test_gptq_q4_0_checkpoint_exports_to_gguf_with_the_same_blocks(text_ckpt, tmp_path, capsys):
    ckpt, calib = text_ckpt
    assert quantize(ckpt, calib, tmp_path / "g", "--scheme", "gptq-q4_0", "--act-order") == 0
    assert "quantized (gptq-q4_0) in" in capsys.readouterr().out
    spec = json.loads((tmp_path / "g" / "config.json").read_text())["quantization"]
    assert spec["kind"] == "q4_0" and spec["method"] == "gptq" and spec["act_order"] is True
    model = load_checkpoint(tmp_path / "g").model
    assert isinstance(model.layers[1].mlp.w2, QuantLinear) and model.layers[1].mlp.w2.scheme == "q4_0"
    rtn = q4_0.quantize(load_checkpoint(ckpt).model.layers[1].mlp.w2.weight.detach().numpy())
    assert not np.array_equal(model.layers[1].mlp.w2.parts()["qweight"], rtn["qweight"])  # not plain rounding
    gguf_format.write_model(model, None, tmp_path / "m.gguf")  # GGUF stores no character vocabulary
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    ours = split_qkv(model.config, {k: q4_0.to_gguf(p) for k, p in stored_parts(model, "q4_0").items()})
    names = gguf_format.tensor_names(model.config, "llama")
    assert len(ours) == 7 * model.config.n_layers
    for name, blocks in ours.items():
        t = tensors[names[name]]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q4_0
        assert np.array_equal(np.asarray(t.data).reshape(blocks.shape), blocks)


def test_gptq_int4_checkpoint_loads_as_int4(text_ckpt, tmp_path):
    ckpt, calib = text_ckpt
    argv = ("--scheme", "gptq-int4", "--group-size", "64", "--seq-len", "16", "--quantize-embeddings")
    assert quantize(ckpt, calib, tmp_path / "g", *argv) == 0
    spec = json.loads((tmp_path / "g" / "config.json").read_text())["quantization"]
    assert spec["kind"] == "int4" and spec["group_size"] == 64 and spec["calibration_sequences"] == 8
    model = load_checkpoint(tmp_path / "g").model
    assert model.layers[0].attn.wqkv.group == 64
    assert isinstance(model.lm_head, QuantLinear)  # the head too, from the final norm's outputs
    tokens = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        reference = model(tokens).numpy()
    exact = NumpyModel.from_checkpoint(tmp_path / "g", activations="float32")  # same int4 blocks, float math
    numpy_logits = exact.logits(tokens.numpy())
    np.testing.assert_allclose(numpy_logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_bad_calibration_input_is_one_line(text_ckpt, tmp_path, one_line_error):
    ckpt, _ = text_ckpt
    short = tmp_path / "short.txt"
    short.write_text("the cat")
    base = ["quantize", str(ckpt), "--out", str(tmp_path / "o"), "--scheme", "gptq-q4_0"]
    assert "fewer than one sequence" in one_line_error([*base, "--calibration", str(short)])
    assert "needs calibration text" in one_line_error(base)
    big = CharTokenizer.train([string.printable])  # more tokens than the model's vocabulary
    model = Model(tiny_llama(vocab_size=40)).eval()
    mismatched = save_checkpoint(tmp_path / "mismatch", model, big)
    argv = ["quantize", str(mismatched), "--out", str(tmp_path / "o2"), "--scheme", "gptq-int4",
            "--calibration", str(short)]  # fmt: skip
    assert "do not belong together" in one_line_error(argv)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_recording_accumulates_the_hessian_and_absmax_of_the_inputs():
    lin = torch.nn.Linear(12, 5)
    xs = [torch.randn(3, 7, 12), torch.randn(2, 12)]
    with recording({"lin": lin}) as stats:
        for x in xs:
            lin(x)
    lin(torch.randn(4, 12))  # after the block: not recorded
    rows = torch.cat([x.reshape(-1, 12) for x in xs]).double()
    assert stats["lin"].rows == 23
    torch.testing.assert_close(stats["lin"].hessian, rows.T @ rows, rtol=1e-5, atol=1e-5)  # float32 products
    torch.testing.assert_close(stats["lin"].absmax, rows.abs().amax(0).float())
