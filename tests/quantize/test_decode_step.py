"""The NumPy runtime's decode step in C (tinylm.quantize.decode) against the runtime's Python forward
pass, its reference: same logits, same cache contents, same greedy tokens, for both families and every
weight form the kernels multiply; the Python path wherever the step does not apply."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_gpt2, tiny_llama
from tests.generate.conftest import random_model
from tinylm.checkpoint import model_state_dict
from tinylm.errors import TinyLMError
from tinylm.generate import Sampler, SamplingParams, generate_ids
from tinylm.generate.bench import quantization_spec
from tinylm.quantize import SCHEMES, kernels
from tinylm.quantize.decode import DecodeStep
from tinylm.quantize.transform import make_spec, quantize_weights
from tinylm.runtime import NumpyModel

# rows of 64 and 96 values: whole 32-blocks for every scheme; 96 = 3 blocks, so AVX-512's int8 steps of two
# blocks end with a half one; the vocabulary, 67, leaves 3 head rows after the kernels' blocks of 4
SHAPES = {
    "llama-gqa-untied": tiny_llama(dim=64, hidden_dim=96, n_heads=4, n_kv_heads=2, tie_embeddings=False),
    "llama-mha-bias": tiny_llama(dim=64, hidden_dim=96, n_kv_heads=4, bias=True),
    "gpt2-tanh": tiny_gpt2(dim=64),
    "gpt2-exact-untied": tiny_gpt2(dim=64, gelu="exact", tie_embeddings=False),
}
PROMPTS = {2: [3, 1, 4, 1, 5], 0: [9, 2], 1: [6]}  # cache row: prompt (a one-token prompt takes the step too)


@pytest.fixture(scope="module")
def lib():
    if kernels.library() is None:
        pytest.skip("no C compiler here: no C step (the fallback is tested below)")
    return kernels.library()


def weights_of(cfg):
    return {k: v.numpy() for k, v in model_state_dict(random_model(cfg)).items()}


def engines(cfg, weights, spec=None, activations="float32"):
    """Two runtimes on the same weights: the C step's, and one whose step is switched off."""
    fast, slow = (NumpyModel(cfg, weights, quantization=spec, activations=activations) for _ in range(2))
    assert fast.step is not None
    slow.step = None
    return fast, slow


def run_both(fast, slow, steps=6):
    """Prefill three cache rows, then decode them in turn (the same tokens into both engines): the
    logits of every step from each engine, stacked."""
    got, want = [], []
    for row, prompt in PROMPTS.items():
        got.append(fast.prefill([row], [prompt])[0])
        want.append(slow.prefill([row], [prompt])[0])
    for i in range(steps):
        row = i % 3
        token = np.array([int(np.argmax(want[-1]))])
        got.append(fast.decode([row], token)[0])
        want.append(slow.decode([row], token)[0])
    return np.stack(got), np.stack(want)


def close(got, want, rtol=1e-5):
    """Equal up to float32 rounding, relative to the largest logit."""
    assert np.abs(got - want).max() <= rtol * np.abs(want).max()


@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("shape", SHAPES)
def test_float_model_steps_equal_the_python_forward(lib, shape, threads, monkeypatch):
    """On one thread, and on three (more than a small machine's cores; 4 heads split 2/1/1), which the
    step built for one thread makes room for when asked."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fast, slow = engines(SHAPES[shape], weights_of(SHAPES[shape]))
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    got, want = run_both(fast, slow)
    close(got, want)
    np.testing.assert_allclose(fast.k_cache, slow.k_cache, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.v_cache, slow.v_cache, rtol=1e-5, atol=1e-5)
    assert np.array_equal(fast.pos, slow.pos)


@pytest.mark.parametrize("keep", [None, []], ids=["float-head", "quantized-head"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("shape", ["llama-gqa-untied", "gpt2-exact-untied"])
def test_quantized_model_steps_equal_the_python_forward(lib, shape, scheme, keep):
    """float32 activations: the float model of the dequantized weights, as the Python path. int8 ones: the
    Python path's rounded activations -- except that a difference of one float32 ulp upstream (a norm's
    sum in another order) can round an activation the other way now and then, so one step in the run may
    differ by such a turn, still far less than rounding the activations at all changes (int8 vs float32)."""
    cfg, spec = SHAPES[shape], make_spec(scheme, keep=keep)
    stored = quantize_weights(spec, weights_of(cfg))
    got, exact = run_both(*engines(cfg, stored, spec))
    close(got, exact, 3e-5)  # 4-bit weights sum larger terms: a few more ulps
    got, want = run_both(*engines(cfg, stored, spec, "int8"))
    scale = np.abs(want).max()
    apart = np.abs(got - want).max(1) > 3e-5 * scale  # steps beyond float32 rounding
    assert apart.sum() <= 1
    if scheme != "nf4":  # nf4 (a table) keeps float32 activations
        assert np.abs(want - exact).max() > 5 * np.abs(got - want).max()


@pytest.mark.parametrize("shape", SHAPES)
def test_greedy_tokens_are_unchanged(lib, shape):
    fast, slow = engines(SHAPES[shape], weights_of(SHAPES[shape]))
    greedy = Sampler(SamplingParams(temperature=0))
    ids = [[t.tolist() for t in generate_ids(e, [[1, 5, 9]], 20, greedy)] for e in (fast, slow)]
    assert ids[0] == ids[1] and len({t[0] for t in ids[0]}) > 3


def test_other_builds_step_like_the_native_one(lib, tmp_path):
    """The plain C loops (a CPU without AVX2, or no OpenMP) and AVX2 run the same step."""
    cfg, spec = SHAPES["llama-gqa-untied"], make_spec("q4_0")
    stored = quantize_weights(spec, weights_of(cfg))
    for acts in kernels.ACTIVATIONS:
        native, _ = engines(cfg, stored, spec, acts)
        want = native.prefill([0], [[7]])
        for name, target in {"plain-C": (), "AVX2": ("-mavx2", "-mfma")}.items():
            path = tmp_path / f"{name}.so"
            assert kernels.compile_library(path, ("-O2", *target, "-fPIC", "-shared"))
            other, _ = engines(cfg, stored, spec, acts)
            other.step = DecodeStep(kernels.load_library(path), other, native.step.kinds)
            close(other.prefill([0], [[7]]), want, 3e-5)


def test_forms_the_kernels_do_not_multiply_take_the_python_path(lib):
    """W8A8's matrices multiply themselves (int8_gemm): no C step, and decoding still works."""
    cfg = SHAPES["llama-gqa-untied"]
    stored = quantize_weights(quantization_spec("w8a8", stored=True), weights_of(cfg))
    runtime = NumpyModel(cfg, stored, quantization=quantization_spec("w8a8"))
    assert runtime.step is None
    assert runtime.decode([0], runtime.prefill([0], [[1, 2]]).argmax(-1)).shape == (1, cfg.vocab_size)


def test_without_the_kernels_the_python_path_decodes(monkeypatch):
    cfg = SHAPES["gpt2-tanh"]
    monkeypatch.setattr(kernels, "library", lambda: None)
    runtime = NumpyModel(cfg, weights_of(cfg))
    assert runtime.step is None
    assert runtime.decode([0], runtime.prefill([0], [[1, 2]]).argmax(-1)).shape == (1, cfg.vocab_size)


def test_a_token_outside_the_vocabulary_is_one_line(lib):
    cfg = SHAPES["gpt2-tanh"]
    fast, _ = engines(cfg, weights_of(cfg))
    with pytest.raises(TinyLMError, match="token 67 is not in the vocabulary of 67"):
        fast.prefill([0], [[67]])
