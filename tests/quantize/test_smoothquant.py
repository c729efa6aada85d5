"""SmoothQuant W8A8: smoothing alone changes no logits; the int8 kernel is exact; W8A8 layers match
their definition; outliers break naive W8A8 and smoothing repairs it; checkpoints save and load;
bad input is one line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.checkpoint import load_checkpoint
from tinylm.cli import main
from tinylm.config import get_preset
from tinylm.generate import bench
from tinylm.model import Model
from tinylm.quantize import int8_gemm, smoothquant
from tinylm.quantize.calibrated import Options, absmax_stats, quantize_calibrated
from tinylm.quantize.w8a8_linear import W8A8Linear, quantize_tokens
from tinylm.runtime import NumpyModel

CONFIGS = {"llama": tiny_llama(dim=64, hidden_dim=128), "gpt2": tiny_gpt2(dim=64)}
KEEP = ["tok_emb", "pos_emb", "lm_head"]


def trained_like(name: str) -> Model:
    """A random model whose norms are not all ones (as a trained one's are not)."""
    model = Model(CONFIGS[name]).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_smoothing_alone_leaves_the_logits_unchanged(name, alpha):
    model = trained_like(name)
    tokens = torch.randint(0, 67, (4, 32))
    with torch.no_grad():
        before = model(tokens)
        smoothquant.plant_outliers(model, [3, 17], 30.0)
        outliers = model(tokens)
        smoothquant.smooth(model, absmax_stats(model, tokens), alpha)
        after = model(tokens)
    scale = before.abs().max()
    assert (outliers - before).abs().max() <= 1e-5 * scale
    assert (after - before).abs().max() <= 1e-5 * scale


def path_kernel(path: str) -> int8_gemm.Kernel:
    """int8_gemm.c built for one inner loop; skipped where this CPU cannot run it or cc cannot build it."""
    if not int8_gemm.runs_here(path):
        pytest.skip(f"this CPU lacks the instructions of the {path} kernel")
    kern = int8_gemm.build(int8_gemm.PATHS[path][0])
    if kern is None:
        pytest.skip(f"no {path} kernel here: cc cannot build it, or TINYLM_KERNELS=numpy")
    assert kern.path == path
    return kern


@pytest.mark.parametrize("path", list(int8_gemm.PATHS))
@pytest.mark.parametrize(("B", "n", "m"), [(1, 5, 3), (7, 64, 33), (13, 4099, 50), (6, 16384, 40), (70, 200, 100)])
def test_int8_kernel_is_exact(path, B, n, m):
    kern = path_kernel(path)
    rng = np.random.default_rng(n)
    x = rng.integers(-128, 128, (B, n), dtype=np.int8)
    w = rng.integers(-128, 128, (m, n), dtype=np.int8)
    x[0], w[0] = -128, -128  # the extremes: every product 16384, sums up to 2^28
    x[-1, ::2], w[-1, 1::2] = 127, -128
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    packed = int8_gemm.pack(w, kern)
    for threads in (1, 2):
        y = int8_gemm.matmul(x, packed, threads)
        assert y.dtype == np.int32 and np.array_equal(y, exact)
    fallback = int8_gemm.Packed(packed.w, None, packed.wsum)  # NumPy, as without a compiler
    assert np.array_equal(int8_gemm.matmul(x, fallback), exact)


def test_the_native_kernel_is_one_of_the_paths():
    kern = int8_gemm.kernel()
    if kern is None:
        pytest.skip("no C compiler")
    assert kern.path in int8_gemm.PATHS and int8_gemm.runs_here(kern.path)


@pytest.mark.parametrize("path", list(int8_gemm.PATHS))
def test_the_w8a8_layer_rounds_multiplies_and_scales_as_defined(path):
    """The fused C layer (rounding, product, scaling in one call) against NumPy on the same definition:
    ties round half to even, a row of zeros stays zeros, rows and outputs off the tile sizes."""
    kern = path_kernel(path)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 70)).astype(np.float32)
    x[1] = 0
    x[2, :6] = [127, 2.5, -3.5, 0.5, -0.5, 126.5]  # scale 1: exact ties
    w = rng.integers(-127, 128, (45, 70), dtype=np.int8)
    sw, bias = rng.random(45).astype(np.float32), rng.standard_normal(45).astype(np.float32)
    xq, sx = int8_gemm.round_rows(x)
    assert list(xq[2, :6]) == [127, 2, -4, 0, 0, 126] and not xq[1].any()
    expected = (xq.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32) * sx * sw + bias
    packed = int8_gemm.pack(w, kern)
    pad = np.zeros(packed.wsum.size - 45, dtype=np.float32)
    y = int8_gemm.linear(x, packed, np.concatenate([sw, pad]), np.concatenate([bias, pad]), 2)
    np.testing.assert_allclose(y[:, :45], expected, rtol=1e-5, atol=1e-5)


def test_w8a8_linear_is_its_definition():
    lin = torch.nn.Linear(96, 40)
    layer = W8A8Linear.from_linear(lin, "int8", 0, "w")
    x = torch.randn(3, 5, 96)
    x[0, 0] = 0  # a token of zeros
    xq, sx = quantize_tokens(x.reshape(-1, 96))
    assert xq.abs().max() <= 127 and torch.equal(xq[0], torch.zeros(96, dtype=torch.int8))
    w = layer.qweight.float() * layer.scales[:, None]
    expected = (xq.float() * sx) @ w.T + lin.bias
    with torch.no_grad():
        got = layer(x)  # the C kernel where there is a compiler
        layer._matrix = None
        plain = layer(x)  # plain torch
    torch.testing.assert_close(got.reshape(-1, 40), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, got, rtol=1e-6, atol=1e-6)
    assert (got - lin(x)).abs().max() < 0.05 * lin(x).abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the int8 tensor-core path")
@pytest.mark.parametrize("rows", [1, 17, 40])
def test_cuda_integer_products_are_exact(rows):
    from tinylm.quantize.w8a8_linear import int_products

    g = torch.Generator().manual_seed(0)
    xq = torch.randint(-128, 128, (rows, 4096), generator=g, dtype=torch.int8)
    wq = torch.randint(-128, 128, (72, 4096), generator=g, dtype=torch.int8)
    xq[0], wq[0] = -128, -128  # the extremes, over a long inner dimension
    expected = xq.long() @ wq.long().T
    assert torch.equal(int_products(xq.cuda(), wq.cuda()).cpu().long(), expected)
    assert torch.equal(int_products(xq, wq).long(), expected)  # the float64 route


def relative_error(model: Model, reference: torch.Tensor, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(tokens) - reference).norm() / reference.norm())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outliers_break_naive_w8a8_and_smoothquant_repairs_it(name):
    model = trained_like(name)
    smoothquant.plant_outliers(model, [1, 5, 9], 30.0)
    tokens = torch.randint(0, 67, (8, 32))
    with torch.no_grad():
        reference = model(tokens)
    errors = {}
    for scheme in ("w8a8", "smoothquant"):
        q = copy.deepcopy(model)
        quantize_calibrated(q, tokens, Options(scheme, KEEP, alpha=0.5))
        assert isinstance(q.layers[0].attn.wqkv, W8A8Linear) and isinstance(q.layers[1].mlp.w2, W8A8Linear)
        errors[scheme] = relative_error(q, reference, tokens)
    assert errors["smoothquant"] < errors["w8a8"] / 3, errors


def test_smoothquant_checkpoint_saves_and_loads(text_ckpt, tmp_path):
    ckpt, calib = text_ckpt
    out = tmp_path / "sq"
    argv = ["quantize", str(ckpt), "--scheme", "smoothquant", "--alpha", "auto", "--calibration", str(calib),
            "--samples", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    spec = json.loads((out / "config.json").read_text())["quantization"]
    assert spec["kind"] == "w8a8" and spec["smoothing"]["alpha"] in smoothquant.SEARCH
    loaded = load_checkpoint(out).model
    assert isinstance(loaded.layers[0].mlp.w3, W8A8Linear) and loaded.layers[0].mlp.w3.qweight.dtype == torch.int8
    original = load_checkpoint(ckpt).model
    tokens = torch.randint(0, original.config.vocab_size, (2, 16))
    with torch.no_grad():
        reference = original(tokens)
    assert relative_error(loaded, reference, tokens) < 0.05
    assert main(["quantize", str(ckpt), "--scheme", "w8a8", "--out", str(tmp_path / "w")]) == 0
    assert isinstance(load_checkpoint(tmp_path / "w").model.layers[1].attn.wo, W8A8Linear)
    with torch.no_grad():  # the NumPy runtime runs it too, rounding its activations the same way
        w8a8 = load_checkpoint(tmp_path / "w").model(tokens).numpy()
    numpy_logits = NumpyModel.from_checkpoint(tmp_path / "w").logits(tokens.numpy())
    # float32 differences between the engines move an activation across a rounding boundary now and then,
    # so compare with W8A8's own error: float activations would leave a large part of it
    assert np.linalg.norm(numpy_logits - w8a8) < 0.1 * np.linalg.norm(w8a8 - reference.numpy())


def test_bad_alpha_is_one_line(text_ckpt, tmp_path, one_line_error):
    ckpt, calib = text_ckpt
    base = ["quantize", str(ckpt), "--scheme", "smoothquant", "--calibration", str(calib), "--out", str(tmp_path / "o")]
    assert "outside [0, 1]" in one_line_error([*base, "--alpha", "1.5"])
    assert "outside [0, 1]" in one_line_error([*base, "--alpha", "-0.1"])
    assert "not a number" in one_line_error([*base, "--alpha", "half"])
    assert not (tmp_path / "o").exists()


def test_bench_measures_w8a8_on_both_engines():
    cfg = get_preset("stories260K")
    weights = bench.random_weights(cfg)
    numpy_engine = bench.build_engine("numpy", cfg, weights, bench.W8A8)
    assert isinstance(numpy_engine.layers[0].wqkv, int8_gemm.Matrix) and isinstance(numpy_engine.layers[1].w1,
                                                                                      int8_gemm.Matrix)  # fmt: skip
    torch_engine = bench.build_engine("torch", cfg, weights, bench.W8A8)
    assert isinstance(torch_engine.model.layers[0].mlp.w2, W8A8Linear)
    assert bench.weight_bytes_per_token(cfg, bench.W8A8) == bench.weight_bytes_per_token(cfg, "int8")
    result = bench.measure("stories260K", "numpy", 1, 4, 8, 1, scheme=bench.W8A8)
    assert result.scheme == bench.W8A8 and result.prefill_tok_s > 0 and result.decode_tok_s > 0
