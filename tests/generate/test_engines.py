"""The torch engine and the NumPy runtime decode exactly what a full forward pass (no cache) would."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.generate.conftest import SHAPES, random_model
from tinylm.checkpoint import model_state_dict
from tinylm.generate import Sampler, SamplingParams, generate_ids
from tinylm.generate.engine import TorchEngine
from tinylm.model import Model
from tinylm.runtime import NumpyModel

GREEDY = Sampler(SamplingParams(temperature=0))


def numpy_model(model: Model) -> NumpyModel:
    return NumpyModel(model.config, {k: v.numpy() for k, v in model_state_dict(model).items()})


def greedy(engine, prompts: list[list[int]], n: int) -> list[list[int]]:
    steps = np.stack(list(generate_ids(engine, prompts, n, GREEDY)))  # (n, B)
    return steps.T.tolist()


def teacher_forced_argmax(model: Model, ids: list[int]) -> list[int]:
    """What greedy decoding with full recomputation picks after every prefix of `ids`, in one pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))
    return logits[0].argmax(-1).tolist()


@pytest.mark.parametrize("name", SHAPES)
def test_greedy_200_tokens_match_full_recompute(name: str) -> None:
    cfg = SHAPES[name]
    model = random_model(cfg)
    prompt = [3, 1, 4, 1, 5]
    torch_out = greedy(TorchEngine(model), [prompt], 200)[0]
    assert greedy(TorchEngine(copy.deepcopy(model), transpose_weights=True), [prompt], 200)[0] == torch_out
    numpy_out = greedy(numpy_model(model), [prompt], 200)[0]
    assert len(set(torch_out)) > 10, "degenerate model: greedy output barely varies"
    assert torch_out == numpy_out
    # full recompute: if every greedy choice equals the no-cache argmax at its position, a
    # token-by-token full-recompute greedy loop produces the same 200 tokens
    seq = prompt + torch_out
    assert teacher_forced_argmax(model, seq)[len(prompt) - 1 :] == torch_out


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_batch_of_different_lengths_equals_each_alone(name: str) -> None:
    model = random_model(SHAPES[name])
    prompts = [[7], [2, 9, 4, 4, 8, 1, 3], [5, 5, 6]]
    for engine in (TorchEngine(model), numpy_model(model)):
        batch = greedy(engine, prompts, 30)
        alone = [greedy(engine, [p], 30)[0] for p in prompts]
        assert batch == alone


@pytest.mark.parametrize("name", SHAPES)
def test_prefill_logits_match_model_forward(name: str) -> None:
    model = random_model(SHAPES[name])
    prompt = list(range(1, 40))
    with torch.no_grad():
        want = model(torch.tensor([prompt]))[0, -1].numpy()
    np.testing.assert_allclose(TorchEngine(model).prefill([0], [prompt])[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(numpy_model(model).prefill([0], [prompt])[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_decode_matches_eager() -> None:
    """Also across generations of other batch sizes and lengths, which must not reuse a stale graph."""
    model = random_model(SHAPES["llama-gqa"].replace(n_layers=1))
    compiled, eager = (
        TorchEngine(copy.deepcopy(model), compile=True, transpose_weights=True),
        TorchEngine(model),
    )
    for prompts, n in (([[1, 2, 3], [4]], 40), ([[5, 6]], 20), ([[1, 2, 3], [4]], 60)):
        assert greedy(compiled, prompts, n) == greedy(eager, prompts, n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_greedy_matches_cpu(compile: bool) -> None:
    model = random_model(SHAPES["llama-gqa"])
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    want = greedy(TorchEngine(model), prompts, 100)
    torch.backends.cuda.matmul.allow_tf32 = False
    got = greedy(TorchEngine(model.cuda(), compile=compile), prompts, 100)
    assert got == want


def test_engine_ignores_dropout_and_leaves_the_training_mode_alone() -> None:
    model = random_model(SHAPES["gpt2"].replace(dropout=0.5)).train()
    got = greedy(TorchEngine(model), [[1, 2]], 20)
    assert model.training
    assert got == greedy(TorchEngine(model.eval()), [[1, 2]], 20)


def test_engine_follows_weights_changed_in_place_between_generations() -> None:
    """A model trained further after its engine was built (e.g. sampling during training)."""
    model = random_model(SHAPES["llama-gqa"])
    engine = TorchEngine(model)
    before = greedy(engine, [[1, 2]], 20)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)  # an in-place update, as an optimizer step makes
    after = greedy(engine, [[1, 2]], 20)
    assert after != before and after == greedy(TorchEngine(model), [[1, 2]], 20)
