"""The C kernels against an exact reference (dequantize, multiply in float64), and the NumPy fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinylm.errors import TinyLMError
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


BUILDS = {"plain-C": (), "AVX2": ("-mavx2", "-mfma"), "AVX2+AVX-VNNI": ("-mavx2", "-mfma", "-mavxvnni")}


@pytest.fixture(scope="module")
def builds(lib, tmp_path_factory):
    """The kernels without -march=native: the plain C loops, and AVX2 (with AVX-VNNI where this CPU has it),
    beside the native build (AVX-512 where the CPU has it). Each is compiled once."""
    out = {"native": lib}
    for name, target in BUILDS.items():
        if "-mavxvnni" in target and "avx_vnni" not in kernels._cpu().split():
            continue
        path = tmp_path_factory.mktemp("kernels") / f"{name}.so"
        assert kernels.compile_library(path, ("-O2", *target, "-fPIC", "-shared"))
        out[name] = kernels.load_library(path)
    return out


def test_other_builds_equal_the_native_one(builds, monkeypatch):
    """Without -march=native the plain C loops run (or AVX2 where the native build has AVX-512): same
    numbers. 22 rows: blocks of 4 rows and a remainder."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (2, 128)).astype(np.float32)
    for scheme in [*schemes.SCHEMES, "float32"]:
        w = weights(rng, (22, 128)) if scheme == "float32" else quantized(scheme, weights(rng, (22, 128)))
        for acts in kernels.ACTIVATIONS:
            native = kernels.matmul(x, w, activations=acts)
            for name, built in builds.items():
                monkeypatch.setattr(kernels, "library", lambda built=built: built)
                got = kernels.matmul(x, w, activations=acts)
                np.testing.assert_allclose(got, native, rtol=1e-5, atol=1e-5 * np.abs(native).max(), err_msg=name)


def test_activations_round_like_gguf_q8_0(lib):
    x = np.random.default_rng(4).normal(0, 1, (3, 96)).astype(np.float32)
    x[1, :32] = 0.0
    xq, xd = kernels.quantize_activations(x, lib)
    g = x.reshape(3, -1, 32)
    d = np.abs(g).max(axis=-1) / np.float32(127)
    inverse = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    assert np.array_equal(xd, d) and np.array_equal(xq, round_away(g * inverse[..., None]).reshape(3, 96))


def rounded_like_q8_0(x: np.ndarray) -> np.ndarray:
    """x (B, n) with each block of 32 rounded to int8 steps of max |x| / 127 (halves away from zero), as
    float64: what the int8-activation kernels multiply, worked out here in NumPy."""
    g = x.reshape(x.shape[0], -1, 32)
    d = np.abs(g).max(axis=-1) / np.float32(127)
    inverse = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    return (round_away(g * inverse[..., None]) * d[..., None].astype(np.float64)).reshape(x.shape)


@pytest.mark.parametrize("width", [288, 256], ids=["odd-blocks", "even-blocks"])
@pytest.mark.parametrize("batch", [1, 3, kernels.SMALL_BATCH, kernels.INT8_ROWS])
@pytest.mark.parametrize("scheme", ["int8", "q8_0", "q4_0", "int4"])
def test_int8_activation_kernel_equals_its_reference_on_every_build(builds, scheme, batch, width, monkeypatch):
    """activations="int8": the float64 product of the activations rounded in NumPy and the dequantized
    weights, within float32 rounding, on each build. 38 rows: blocks of 4 and 2 left over; 288 columns:
    9 blocks, so AVX-512's steps of two blocks end with a half one. Extreme values: a zero weight row, huge
    and tiny weights; activations with a huge block, an all-zero block, a block with one value, halves
    that round away from zero, and values of both signs at the block maximum."""
    rng = np.random.default_rng(5)
    w = quantized(scheme, weights(rng, (38, width)))
    x = rng.normal(0, 1, (batch, width)).astype(np.float32)
    x[0, :8] = 1e3
    x[0, 32:64] = 0.0
    x[-1, 64:96] = 0.0
    x[-1, 70] = -3.0
    x[-1, 96:128] = np.arange(32) - 15.5  # scale 16.5/127: many values land near a half step
    x[-1, 128] = 254.0  # scale 2: odd integers are exact halves
    x[-1, 129:160] = np.arange(1, 32, dtype=np.float32) * np.where(np.arange(31) % 2, 1, -1)
    rounded = rounded_like_q8_0(x)
    exact = rounded @ w.dequantize().astype(np.float64).T
    terms = (np.abs(w.values()) + abs(w.offset)).reshape(38, -1, w.group) * np.abs(w.scale)[:, :, None]
    if w.mins is not None:  # int4 adds min * (each group's sum of x) separately
        terms += np.abs(w.mins)[:, :, None]
    magnitude = np.abs(rounded) @ terms.reshape(38, width).astype(np.float64).T
    # float32: each block's exact integer sum times (weight scale x activation scale), summed over
    # the blocks (at most 9 per lane, then 16 lanes): a few ulps per step
    bound = (width // 32 + 16) * np.finfo(np.float32).eps * magnitude + 1e-30
    for name, built in builds.items():
        monkeypatch.setattr(kernels, "library", lambda built=built: built)
        y = kernels.matmul(x, w, activations="int8")
        assert y.shape == (batch, 38) and np.all(np.abs(y - exact) <= bound), name
        xq, xd = kernels.quantize_activations(x, built)
        assert np.array_equal(xq * xd.repeat(32, axis=1).astype(np.float64), rounded), name
    float_result = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
    assert np.abs(y - float_result).max() > 1e-4 * np.abs(exact).max()  # it did round


def test_int8_activations_only_where_the_form_allows(lib):
    """nf4 (a table, not integers) and groups that a 512-bit step would straddle keep float32 activations."""
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (1, 256)).astype(np.float32)
    nf4 = quantized("nf4", weights(rng, (12, 256)))
    assert not kernels.takes_int8_activations(nf4)
    assert np.array_equal(kernels.matmul(x, nf4, activations="int8"), kernels.matmul(x, nf4))
    assert kernels.takes_int8_activations(quantized("q4_0", weights(rng, (12, 256))))


def test_a_bad_activation_mode_is_one_line(monkeypatch):
    monkeypatch.setenv("TINYLM_ACTIVATIONS", "int4")
    with pytest.raises(TinyLMError, match=r"TINYLM_ACTIVATIONS=.int4. .*int8 or float32"):
        kernels.activations_from_env("int8")


def test_one_token_attention_equals_a_float64_reference(lib):
    """6 query heads sharing 2 kv heads; only the first 11 of 16 cache positions are read."""
    rng = np.random.default_rng(7)
    q = rng.normal(0, 1, (6, 8)).astype(np.float32)
    k, v = rng.normal(0, 1, (2, 2, 16, 8)).astype(np.float32)
    k[:, 11:] = v[:, 11:] = np.nan  # positions not yet written
    y = kernels.attend_one(q, k, v, 11, 0.3)
    assert np.array_equal(kernels.attend_one(q, k, v, 11, 0.3, threads=1), kernels.attend_one(q, k, v, 11, 0.3, 4))
    scores = np.einsum("hgd,htd->hgt", q.reshape(2, 3, 8).astype(np.float64), k[:, :11]) * 0.3
    p = np.exp(scores - scores.max(-1, keepdims=True))
    exact = np.einsum("hgt,htd->hgd", p / p.sum(-1, keepdims=True), v[:, :11]).reshape(6, 8)
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-6)


def huge_page_eligible(address: int) -> bool | None:
    """Whether Linux may back the mapping holding `address` with 2 MiB pages (/proc/self/smaps'
    THPeligible); None where that cannot be told."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        if "-" in line.split()[0] and not line.endswith(":"):  # a mapping's first line: start-end perms ...
            start, end = (int(a, 16) for a in line.split()[0].split("-"))
            inside = start <= address < end
        elif inside and line.startswith("THPeligible:"):
            return line.split()[1] == "1"
    return None


def test_in_large_pages_copies_into_one_block_marked_for_large_pages():
    rng = np.random.default_rng(5)
    arrays = [rng.normal(0, 1, (1024, 1024)).astype(np.float32), np.arange(-7, 6, dtype=np.int8),
              rng.normal(0, 1, (3, 5)).astype(np.float32)]  # fmt: skip
    copies = kernels.in_large_pages(arrays)
    for a, c in zip(arrays, copies, strict=True):
        assert c.dtype == a.dtype and np.array_equal(c, a) and not np.shares_memory(c, a)
        assert c.ctypes.data % 64 == 0 and c.flags.c_contiguous and c.flags.writeable
    assert copies[1].ctypes.data == copies[0].ctypes.data + copies[0].nbytes  # side by side
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        pytest.skip("no transparent huge pages here (not Linux)")
    if "[never]" in thp:
        pytest.skip("transparent huge pages are switched off here")
    assert huge_page_eligible(copies[0].ctypes.data)
    assert kernels.in_large_pages([]) == []
