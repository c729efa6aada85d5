"""The schemes' numbers: llama.cpp's round-trip practice, GGUF byte identity, NF4's code, double quantization."""

from __future__ import annotations

import statistics

import gguf
import numpy as np
import pytest

from tinylm.errors import TinyLMError
from tinylm.quantize import int4, nf4, q4_0, q8_0, schemes
from tinylm.quantize.blocks import pack_nibbles, round_away, unpack_nibbles

Q = gguf.GGMLQuantizationType


def cos_data() -> np.ndarray:
    """llama.cpp's test-quantize-fns data: 4,096 values 0.1 + 2 cos(i)."""
    return (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float64))).astype(np.float32).reshape(1, -1)


def round_trip(scheme: str, w: np.ndarray) -> np.ndarray:
    mod = schemes.get_scheme(scheme)
    group = schemes.tensor_group(scheme, "w", w.shape, mod.GROUP)
    return mod.form(mod.quantize(w, group), group).dequantize()


# llama.cpp's error measure is sqrt(sum of squared differences) / n (test-quantize-fns.cpp), with
# thresholds 0.002 (8-bit) and the 0.01 (4-bit); we also bound the plain RMSE by the step size.
@pytest.mark.parametrize(("scheme", "llama_cpp_limit", "rmse_limit"), [
    ("int8", 0.002, 0.006), ("q8_0", 0.002, 0.006), ("q4_0", 0.01, 0.08), ("int4", 0.01, 0.08), ("nf4", 0.01, 0.15),
])  # fmt: skip
def test_round_trip_error_on_llama_cpp_data(scheme, llama_cpp_limit, rmse_limit):
    x = cos_data()
    diff = (round_trip(scheme, x) - x).astype(np.float64)
    assert np.sqrt((diff**2).sum()) / x.size < llama_cpp_limit
    assert np.sqrt((diff**2).mean()) < rmse_limit


@pytest.mark.parametrize("scheme", list(schemes.SCHEMES))
def test_parts_match_layout_and_error_is_within_half_a_step(scheme):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (48, 256)).astype(np.float32)
    w[5] = 0.0  # an all-zero row: scale 0, no NaN
    mod = schemes.get_scheme(scheme)
    group = schemes.tensor_group(scheme, "w", w.shape, mod.GROUP)
    parts = mod.quantize(w, group)
    assert tuple(parts) == mod.PARTS
    assert {k: (v.shape, v.dtype) for k, v in parts.items()} == {
        k: (shape, np.dtype(dtype)) for k, (shape, dtype) in mod.layout(w.shape, group).items()
    }
    back = mod.form(parts, group).dequantize()
    assert not np.isnan(back).any() and np.all(back[5] == 0)
    step = np.abs(w).max() / (127 if mod.BITS == 8 else 7)
    assert np.abs(back - w).max() <= step  # generous: each scheme's own step is smaller


def test_q8_0_and_q4_0_are_byte_identical_to_gguf():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (16, 256)).astype(np.float32)
    w[3, 32:64] = 0.0  # an all-zero block
    w[4, :32] = np.float32(0.5)  # ties: every value is the maximum
    assert np.array_equal(q8_0.to_gguf(q8_0.quantize(w)), gguf.quants.quantize(w, Q.Q8_0))
    assert np.array_equal(q4_0.to_gguf(q4_0.quantize(w)), gguf.quants.quantize(w, Q.Q4_0))
    for mod, qtype in ((q8_0, Q.Q8_0), (q4_0, Q.Q4_0)):
        parts = mod.from_gguf(gguf.quants.quantize(w, qtype), w.shape)
        assert all(np.array_equal(parts[k], v) for k, v in mod.quantize(w).items())
        assert np.array_equal(mod.form(parts).dequantize(), gguf.quants.dequantize(mod.to_gguf(parts), qtype))


def test_nf4_code_is_the_papers_normal_quantiles():
    """QLoRA, Appendix E: 8 positive and 7 negative quantiles of N(0, 1) between offset 0.9677083 and
    1/2, plus zero, scaled to [-1, 1]."""
    offset, ppf = 0.9677083, statistics.NormalDist().inv_cdf
    positive = [ppf(offset + (0.5 - offset) * i / 8) for i in range(8)]
    negative = [-ppf(offset + (0.5 - offset) * i / 7) for i in range(7)]
    values = sorted([*positive, 0.0, *negative])
    expected = np.array(values) / max(values)
    np.testing.assert_allclose(nf4.CODE, expected, atol=2e-7)
    assert nf4.CODE[7] == 0 and nf4.CODE[0] == -1 and nf4.CODE[15] == 1 and len(nf4.CODE) == 16


def test_nf4_double_quantized_absmax_is_within_half_a_step():
    rng = np.random.default_rng(3)
    absmax = np.abs(rng.normal(0.05, 0.02, 1000)).astype(np.float32)  # 4 blocks of 256, the last partial
    parts = nf4.quantize_absmax(absmax)
    assert parts["absmax_q"].dtype == np.int8 and parts["absmax_scale"].shape == (4,)
    err = np.abs(nf4.dequantize_absmax(parts) - absmax)
    step = np.repeat(parts["absmax_scale"], nf4.ABSMAX_BLOCK)[:1000]
    assert np.all(err <= step / 2 * (1 + 1e-5))
    bits = (1000 * 8 + 4 * 32 + 32) / (1000 * nf4.GROUP)  # per weight, vs 32 / 64 = 0.5 unquantized
    assert bits < 0.13


def test_nf4_picks_the_nearest_code():
    w = np.tile(nf4.CODE * 0.3, 4)[None]  # (1, 64): every code value scaled by 0.3
    parts = nf4.quantize(w.astype(np.float32))
    assert np.array_equal(unpack_nibbles(parts["qweight"])[0], np.tile(np.arange(16), 4))


def test_int4_constant_group_and_range():
    w = np.full((2, 128), 0.25, dtype=np.float32)
    w[1] = np.linspace(-1, 1, 128)
    back = int4.form(int4.quantize(w, 128), 128).dequantize()
    assert np.all(back[0] == np.float16(0.25)) and np.abs(back[1] - w[1]).max() <= (2 / 15) / 2 + 1e-3


def test_round_away_and_nibble_packing():
    x = np.array([0.5, -0.5, 1.5, 2.5, 0.49999997, -2.5], dtype=np.float32)
    assert round_away(x).tolist() == [1, -1, 2, 3, 0, -3]
    q = np.random.default_rng(4).integers(0, 16, (3, 64)).astype(np.uint8)
    packed = pack_nibbles(q)
    assert packed.shape == (3, 32) and packed[0, 0] == q[0, 0] | (q[0, 16] << 4)
    assert np.array_equal(unpack_nibbles(packed), q)


def test_group_size_fallback_and_refusal():
    assert schemes.tensor_group("int4", "w", (8, 288), 128) == 32  # stories15M's dim
    assert schemes.tensor_group("nf4", "w", (8, 768), 64) == 64
    with pytest.raises(TinyLMError, match=r"tensor layers\.0\.mlp\.w2\.weight: rows of 48"):
        schemes.tensor_group("q4_0", "layers.0.mlp.w2.weight", (8, 48), 32)
    with pytest.raises(TinyLMError, match="unknown quantization scheme 'q3'"):
        schemes.get_scheme("q3")
    with pytest.raises(TinyLMError, match="fixed group size"):
        schemes.check_group("q8_0", 64)
