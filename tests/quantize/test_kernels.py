"""The C kernels against an exact reference (dequantize, multiply in float64), and the NumPy fallback."""

from __future__ import annotations

import numpy as np
import pytest

from tinylm.quantize import kernels, schemes
from tinylm.quantize.blocks import round_away

ROWS = 38  # blocks of 4 rows in the kernels, and 2 left over


def quantized(scheme: str, w: np.ndarray):
    mod = schemes.get_scheme(scheme)
    group = schemes.tensor_group(scheme, "w", w.shape, mod.GROUP)
    return mod.form(mod.quantize(w, group), group)


def weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    w = rng.normal(0, 1, shape).astype(np.float32)
    w[0] = 0.0  # a zero row
    w[1, :64] = 1e4  # huge values
    w[2] = rng.normal(0, 1e-6, shape[1])  # tiny ones
    return w


@pytest.fixture(scope="module")
def lib():
    if kernels.library() is None:
        pytest.skip("no C compiler here: the NumPy fallback is the only path (tested below)")
    return kernels.library()


@pytest.mark.parametrize("scheme", list(schemes.SCHEMES))
@pytest.mark.parametrize("batch", [1, 3, kernels.SMALL_BATCH])
def test_kernel_equals_float64_reference(lib, scheme, batch):
    rng = np.random.default_rng(0)
    w = quantized(scheme, weights(rng, (ROWS, 256)))
    x = rng.normal(0, 1, (batch, 256)).astype(np.float32)
    x[0, :8] = 1e3
    exact = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
    y = kernels.matmul(x, w, threads=2)
    # float32 sums of 256 products: error below a few ulps of the sum of the terms' magnitudes
    terms = (np.abs(w.values()) + abs(w.offset)).reshape(ROWS, -1, w.group) * np.abs(w.scale)[:, :, None]
    if w.mins is not None:  # int4 sums scale * q * x and min * x separately (q4_0: q * x and -8 * x)
        terms += np.abs(w.mins)[:, :, None]
    bound = 1e-6 * (np.abs(x).astype(np.float64) @ terms.reshape(ROWS, 256).astype(np.float64).T) + 1e-30
    assert y.shape == (batch, ROWS) and np.all(np.abs(y - exact) <= bound)


@pytest.mark.parametrize("shape", [(37, 256), (5, 40)], ids=["vector-rows", "odd-width"])
def test_float_kernel_equals_float64_reference(lib, shape):
    """Float32 weights (the head kept in float, float checkpoints in the NumPy runtime)."""
    rng = np.random.default_rng(6)
    w = weights(rng, shape) if shape[1] >= 64 else rng.normal(0, 1, shape).astype(np.float32)
    x = rng.normal(0, 1, (3, shape[1])).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    bound = 1e-6 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T) + 1e-30
    assert np.all(np.abs(kernels.matmul(x, w, threads=2) - exact) <= bound)


@pytest.mark.parametrize("scheme", list(schemes.SCHEMES))
def test_fallback_equals_kernel(lib, scheme, monkeypatch):
    rng = np.random.default_rng(1)
    w = quantized(scheme, weights(rng, (24, 128)))
    x = rng.normal(0, 1, (2, 128)).astype(np.float32)
    fast = kernels.matmul(x, w, threads=1)
    monkeypatch.setattr(kernels, "library", lambda: None)
    slow = kernels.matmul(x, w)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5 * np.abs(slow).max())


def test_rows_of_fused_forms_multiply_like_their_parts(lib):
    rng = np.random.default_rng(2)
    a, b = quantized("q4_0", weights(rng, (8, 64))), quantized("q4_0", weights(rng, (16, 64)))
    x = rng.normal(0, 1, (1, 64)).astype(np.float32)
    both = kernels.matmul(x, a.rows(b))
    np.testing.assert_array_equal(both, np.concatenate([kernels.matmul(x, a), kernels.matmul(x, b)], axis=1))


@pytest.mark.parametrize("target", [(), ("-mavx2", "-mfma")], ids=["plain-C", "AVX2"])
def test_other_builds_equal_the_native_one(lib, tmp_path, monkeypatch, target):
    """Without -march=native the plain C loops run (or AVX2 where the native build has AVX-512): same
    numbers. 22 rows: blocks of 4 rows and a remainder."""
    portable = tmp_path / "portable.so"
    assert kernels.compile_library(portable, ("-O2", *target, "-fPIC", "-shared"))
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (2, 128)).astype(np.float32)
    for scheme in [*schemes.SCHEMES, "float32"]:
        w = weights(rng, (22, 128)) if scheme == "float32" else quantized(scheme, weights(rng, (22, 128)))
        for acts in ("float32", "int8"):
            monkeypatch.setattr(kernels, "ACTIVATIONS", acts)
            native = kernels.matmul(x, w)
            monkeypatch.setattr(kernels, "library", lambda: kernels.load_library(portable))
            np.testing.assert_allclose(kernels.matmul(x, w), native, rtol=1e-5, atol=1e-5 * np.abs(native).max())
            monkeypatch.setattr(kernels, "library", lambda: lib)


def test_activations_round_like_gguf_q8_0(lib):
    x = np.random.default_rng(4).normal(0, 1, (3, 96)).astype(np.float32)
    x[1, :32] = 0.0
    xq, xd = kernels.quantize_activations(x, lib)
    g = x.reshape(3, -1, 32)
    d = np.abs(g).max(axis=-1) / np.float32(127)
    inverse = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    assert np.array_equal(xd, d) and np.array_equal(xq, round_away(g * inverse[..., None]).reshape(3, 96))


@pytest.mark.parametrize("scheme", ["int8", "q8_0", "q4_0", "int4"])
def test_int8_activation_kernel_equals_its_exact_reference(lib, scheme, monkeypatch):
    """TINYLM_ACTIVATIONS=int8: the float64 product of the rounded activations and dequantized weights."""
    monkeypatch.setattr(kernels, "ACTIVATIONS", "int8")
    rng = np.random.default_rng(5)
    w = quantized(scheme, weights(rng, (40, 256)))
    x = rng.normal(0, 1, (3, 256)).astype(np.float32)
    xq, xd = kernels.quantize_activations(x, lib)
    rounded = (xq.reshape(3, -1, 32) * xd[..., None].astype(np.float64)).reshape(3, 256)
    exact = rounded @ w.dequantize().astype(np.float64).T
    y = kernels.matmul(x, w)
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())
    assert np.abs(y - x.astype(np.float64) @ w.dequantize().T).max() > 1e-4 * np.abs(exact).max()  # it did round


def test_one_token_attention_equals_a_float64_reference(lib):
    """6 query heads sharing 2 kv heads; only the first 11 of 16 cache positions are read."""
    rng = np.random.default_rng(7)
    q = rng.normal(0, 1, (6, 8)).astype(np.float32)
    k, v = rng.normal(0, 1, (2, 2, 16, 8)).astype(np.float32)
    k[:, 11:] = v[:, 11:] = np.nan  # positions not yet written
    y = kernels.attend_one(q, k, v, 11, 0.3)
    scores = np.einsum("hgd,htd->hgt", q.reshape(2, 3, 8).astype(np.float64), k[:, :11]) * 0.3
    p = np.exp(scores - scores.max(-1, keepdims=True))
    exact = np.einsum("hgt,htd->hgd", p / p.sum(-1, keepdims=True), v[:, :11]).reshape(6, 8)
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-6)
