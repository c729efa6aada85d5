"""QuantLinear and quantize_model: same numbers as a float model built from the dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tests.conftest import tiny_llama
from tinylm.checkpoint import build_model, model_state_dict
from tinylm.errors import TinyLMError
from tinylm.generate.engine import TorchEngine
from tinylm.generate.loop import generate_ids
from tinylm.generate.sampling import Sampler, SamplingParams
from tinylm.model import Model
from tinylm.quantize import kernels, schemes
from tinylm.quantize.blocks import Form
from tinylm.quantize.linear import QuantLinear, quantize_model, tensor_reports

SCHEMES = list(schemes.SCHEMES)


def quantized_model(scheme: str, **kw) -> tuple[Model, Model]:
    """(a quantized tiny Llama, the float model holding its dequantized weights)"""
    model = Model(tiny_llama(dim=64, hidden_dim=128, **kw)).eval()
    quantize_model(model, scheme)
    sd = model_state_dict(model)
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            for part in list(sd):
                if part.startswith(name + ".") and part != name + ".bias":
                    del sd[part]
            sd[name + ".weight"] = m.dequantized()
    return model, build_model(model.config, sd).eval()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", [1, 2 * kernels.SMALL_BATCH])
def test_quant_linear_is_linear_of_the_dequantized_weight(scheme, batch):
    lin = nn.Linear(128, 40)
    q = QuantLinear.from_linear(lin, scheme, schemes.get_scheme(scheme).GROUP)
    x = torch.randn(batch, 3, 128)
    with torch.no_grad():
        want = F.linear(x.double(), q.dequantized().double(), lin.bias.double())
        got = q(x)
    assert got.shape == (batch, 3, 40) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert q.dequantized().sub(lin.weight).abs().max() < lin.weight.abs().max() / 5  # it is lin, roughly


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantized_engine_equals_float_model_of_dequantized_weights(scheme):
    model, reference = quantized_model(scheme)
    idx = torch.randint(0, 67, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference(idx), rtol=1e-4, atol=1e-5)
    greedy = Sampler(SamplingParams(temperature=0))
    ids = [list(generate_ids(TorchEngine(m), [[1, 5, 9]], 12, greedy)) for m in (model, reference)]
    assert ids[0] == ids[1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_state_dict_round_trip_is_bit_exact_and_small(scheme, tmp_path):
    model, _ = quantized_model(scheme, tie_embeddings=False, vocab_size=64)
    save_file(model_state_dict(model), tmp_path / "q.safetensors")
    loaded = load_file(tmp_path / "q.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in model_state_dict(model).items())
    sizes = {r.name: (r.bytes_before, r.bytes_after) for r in tensor_reports(Model(model.config), model)}
    before, after = (sum(s[i] for s in sizes.values()) for i in (0, 1))
    assert before / after > (3.7 if schemes.get_scheme(scheme).BITS == 8 else 6.0)


def test_keep_and_refusals():
    model = Model(tiny_llama(dim=64, hidden_dim=128, tie_embeddings=False)).eval()
    quantize_model(model, "q8_0", keep=["lm_head", "layers.1"])
    assert isinstance(model.layers[0].mlp.w1, QuantLinear) and isinstance(model.lm_head, nn.Linear)
    assert isinstance(model.layers[1].attn.wo, nn.Linear)
    with pytest.raises(TinyLMError, match=r"tensor layers\.0\.mlp\.w2\.weight: rows of 48"):
        quantize_model(Model(tiny_llama(dim=64, hidden_dim=48)), "q4_0")
    with pytest.raises(TinyLMError, match="shares the token embedding"):
        quantize_model(Model(tiny_llama(dim=64)), "int8", keep=[])


def test_custom_op_for_torch_compile():
    lin = QuantLinear.from_linear(nn.Linear(64, 32), "q4_0", 32)
    q, scale, mins, lut = lin._kernel
    x = torch.randn(3, 64)
    torch.library.opcheck(torch.ops.tinylm.quant_matmul.default, (x, q, scale, mins, lut, 4, 32, -8.0),
                          test_utils=("test_schema", "test_faketensor"))  # fmt: skip
    with torch.no_grad():
        np.testing.assert_allclose(torch.ops.tinylm.quant_matmul(x, q, scale, mins, lut, 4, 32, -8.0).numpy(),
                                   (lin(x) - lin.bias).numpy(), rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("scheme", SCHEMES)
def test_numpy_runtime_runs_quantized_weights_like_the_torch_engine(scheme):
    from tinylm.quantize.transform import make_spec
    from tinylm.runtime import NumpyModel

    model, reference = quantized_model(scheme)
    weights = {k: v.numpy() for k, v in model_state_dict(model).items()}
    runtime = NumpyModel(model.config, weights, quantization=make_spec(scheme), activations="float32")
    assert isinstance(runtime.layers[0].w1, Form) and runtime.layers[0].w1.shape == (256, 64)  # gate + up, packed
    greedy = Sampler(SamplingParams(temperature=0))
    ids = [[t.tolist() for t in generate_ids(e, [[1, 5, 9], [3]], 12, greedy)] for e in (runtime, TorchEngine(reference))]
    assert ids[0] == ids[1]
    idx = torch.randint(0, 67, (2, 10))
    with torch.no_grad():
        want = reference(idx).numpy()
    np.testing.assert_allclose(runtime.logits(idx.numpy()), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0"])
def test_numpy_runtime_rounds_activations_to_int8_unless_asked(scheme, monkeypatch):
    """Its default, as llama.cpp's: the inputs of 8-bit and q4_0 matrices rounded to int8 blocks (close to,
    not equal to, the exact float32 path); TINYLM_ACTIVATIONS=float32 or the argument choose exact."""
    from tinylm.quantize.transform import make_spec
    from tinylm.runtime import NumpyModel

    monkeypatch.delenv("TINYLM_ACTIVATIONS", raising=False)
    model, _ = quantized_model(scheme)
    weights = {k: v.numpy() for k, v in model_state_dict(model).items()}
    cfg, spec = model.config, make_spec(scheme)
    fast, exact = (NumpyModel(cfg, weights, quantization=spec, activations=a) for a in (None, "float32"))
    assert fast.activations == "int8"
    rounded, want = (e.prefill([0], [[1, 5, 9]]) for e in (fast, exact))  # 3 rows: through the kernels
    if kernels.library() is None:  # no C kernels (no compiler, TINYLM_KERNELS=numpy): NumPy multiplies in float32
        np.testing.assert_array_equal(rounded, want)
    else:
        assert 0 < np.abs(rounded - want).max() < 0.05 * np.abs(want).max()
    monkeypatch.setenv("TINYLM_ACTIVATIONS", "float32")
    assert NumpyModel(cfg, weights, quantization=spec).activations == "float32"


def test_quantized_output_head_runs_in_both_engines():
    from tinylm.quantize.transform import make_spec
    from tinylm.runtime import NumpyModel

    model = Model(tiny_llama(dim=64, hidden_dim=128, tie_embeddings=False)).eval()
    quantize_model(model, "q8_0", keep=["tok_emb"])  # what --quantize-embeddings asks for
    assert isinstance(model.lm_head, QuantLinear)
    weights = {k: v.numpy() for k, v in model_state_dict(model).items()}
    spec = make_spec("q8_0", keep=["tok_emb"])
    runtime = NumpyModel(model.config, weights, quantization=spec, activations="float32")
    assert isinstance(runtime.head, Form)
    greedy = Sampler(SamplingParams(temperature=0))
    ids = [[t.tolist() for t in generate_ids(e, [[1, 5, 9]], 12, greedy)] for e in (runtime, TorchEngine(model))]
    assert ids[0] == ids[1]


def test_bench_says_which_activations_each_engine_multiplied(monkeypatch):
    from tinylm.generate import bench

    monkeypatch.delenv("TINYLM_ACTIVATIONS", raising=False)
    cfg = tiny_llama(dim=64, hidden_dim=128)
    weights = bench.random_weights(cfg)
    said = {(e, s): bench.activations_of(bench.build_engine(e, cfg, weights, s), s)
            for e in ("numpy", "torch") for s in ("fp32", "q4_0", "nf4", "w8a8")}  # fmt: skip
    int8 = "int8" if kernels.library() is not None else "float32"  # the NumPy fallback rounds nothing
    assert said == {("numpy", "fp32"): "float32", ("numpy", "q4_0"): int8, ("numpy", "nf4"): "float32",
                    ("numpy", "w8a8"): "int8/token", ("torch", "fp32"): "float32", ("torch", "q4_0"): "float32",
                    ("torch", "nf4"): "float32", ("torch", "w8a8"): "int8/token"}  # fmt: skip
    monkeypatch.setenv("TINYLM_ACTIVATIONS", "int8")
    assert bench.activations_of(bench.build_engine("torch", cfg, weights, "q8_0"), "q8_0") == int8
