"""The NumPy transformer against torch autograd: logits, loss and every parameter's gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinylm.model
from tests.conftest import tiny_gpt2, tiny_llama
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.nptrain.model import Transformer, parameter_shapes
from tinylm.train.objectives import cross_entropy

CONFIGS = {
    "llama-gqa": tiny_llama(),
    "llama-mqa-untied-biases": tiny_llama(n_kv_heads=1, tie_embeddings=False, bias=True),
    "gpt2": tiny_gpt2(),
    "gpt2-untied-exact-gelu": tiny_gpt2(tie_embeddings=False, gelu="exact"),
    "gpt2-rope-gqa-no-bias": tiny_gpt2(positions="rope", n_kv_heads=2, bias=False),
    "layernorm-swiglu": tiny_llama(norm="layernorm", bias=True),
}


def rope_float64(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """tinylm.model.apply_rope rotates in float32 whatever the input (for bf16 runs); the float64
    reference keeps float64: (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def torch_reference(cfg, dtype: torch.dtype, monkeypatch) -> Model:
    torch.manual_seed(0)
    model = Model(cfg).to(dtype)
    if dtype == torch.float64 and cfg.positions == "rope":
        monkeypatch.setattr(tinylm.model, "apply_rope", rope_float64)
        freqs = cfg.rope_theta ** (-torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.context_length, dtype=torch.float64), freqs)
        model.rope_cos, model.rope_sin = angles.cos(), angles.sin()
    return model


def batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(cfg.vocab_size, (3, 20), generator=g)
    y = torch.randint(cfg.vocab_size, (3, 20), generator=g)
    y[0, :7] = -1  # ignored targets (a prompt, padding)
    y[2, -1] = -1
    return x, y


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_parameters_are_the_torch_models_in_its_order():
    for cfg in CONFIGS.values():
        names = {n: tuple(p.shape) for n, p in Model(cfg).named_parameters()}
        assert list(names.items()) == list(parameter_shapes(cfg).items())


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_loss_and_gradients_equal_autograd(name, dtype, tol, monkeypatch):
    cfg = CONFIGS[name]
    ref = torch_reference(cfg, dtype, monkeypatch)
    weights = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    model = Transformer(cfg, weights, dtype=np.float64 if dtype == torch.float64 else np.float32)
    x, y = batch(cfg)
    logits = ref(x)
    if dtype == torch.float64:  # objectives.cross_entropy computes in float32 by design
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)
    else:
        loss = cross_entropy(logits, y)
    loss.backward()

    assert rel(model.forward(x.numpy()), logits.detach().numpy()) < tol
    assert model.loss_and_backward(x.numpy(), y.numpy()) == pytest.approx(loss.item(), rel=tol)
    for n, p in ref.named_parameters():
        assert rel(model.grads[n], p.grad.numpy()) < tol, n


def test_gradients_accumulate_over_micro_batches():
    """Two half-scaled micro-batches give the gradient of their mean loss."""
    cfg = CONFIGS["gpt2"]
    model = Transformer(cfg, dtype=np.float64, seed=3)
    x, y = (t.numpy() for t in batch(cfg))
    model.loss_and_backward(x, y)
    whole = model.flat_grad.copy()
    model.zero_grad()
    model.loss_and_backward(x, y, scale=0.5)
    model.loss_and_backward(x, y, scale=0.5)
    np.testing.assert_allclose(model.flat_grad, whole, rtol=1e-12, atol=1e-15)


def test_fresh_init_matches_the_torch_models_statistics():
    cfg = tiny_gpt2(n_layers=4, dim=64)
    model = Transformer(cfg, seed=0)
    assert model.params["layers.0.attn.wqkv.weight"].std() == pytest.approx(0.02, rel=0.05)
    assert model.params["layers.3.mlp.w2.weight"].std() == pytest.approx(0.02 / np.sqrt(8), rel=0.05)
    assert (model.params["layers.1.mlp_norm.weight"] == 1).all() and not model.params["layers.1.attn.wo.bias"].any()


def test_a_sequence_of_several_attention_blocks_equals_autograd(monkeypatch):
    """150 positions: three query blocks of attention (64 + 64 + 22), float64."""
    cfg = tiny_llama(context_length=160)
    ref = torch_reference(cfg, torch.float64, monkeypatch)
    model = Transformer(cfg, {k: v.detach().numpy() for k, v in ref.state_dict().items()}, dtype=np.float64)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(cfg.vocab_size, (2, 150), generator=g), torch.randint(cfg.vocab_size, (2, 150), generator=g)
    loss = F.cross_entropy(ref(x).flatten(0, 1), y.flatten())
    loss.backward()
    assert model.loss_and_backward(x.numpy(), y.numpy()) == pytest.approx(loss.item(), rel=1e-9)
    for n, p in ref.named_parameters():
        assert rel(model.grads[n], p.grad.numpy()) < 1e-9, n


def test_threads_split_the_batch_and_sum_to_the_same_loss_and_gradients():
    """threads > 1: each process takes a part of the batch (one part with every target ignored, one
    with none left over: 3 processes, 5 sequences); loss and gradients are the one-process ones, and
    a step after the optimizer changed the parameters in place sees them in every process."""
    cfg = tiny_llama(n_kv_heads=2)
    rng = np.random.default_rng(4)
    x, y = rng.integers(cfg.vocab_size, size=(5, 12)), rng.integers(cfg.vocab_size, size=(5, 12))
    y[2:4] = -1  # the second thread's part: nothing to score
    y[4, :5] = -1
    one, three = Transformer(cfg, dtype=np.float64, seed=1), Transformer(cfg, dtype=np.float64, seed=1, threads=3)
    for _ in range(2):  # gradients accumulate over calls, as over micro-batches
        assert three.loss_and_backward(x, y, scale=0.5) == pytest.approx(one.loss_and_backward(x, y, scale=0.5), rel=1e-12)
    np.testing.assert_allclose(three.flat_grad, one.flat_grad, rtol=1e-10, atol=1e-14)
    assert not three.passes[1].flat_grad.any()  # the workers' own gradients were handed over
    assert three.loss(x, y) == pytest.approx(one.loss(x, y), rel=1e-12)
    for model in (one, three):
        model.flat -= 0.1 * model.flat_grad
    assert three.loss(x, y) == pytest.approx(one.loss(x, y), rel=1e-12)


def test_an_error_in_a_worker_process_is_raised_here_and_the_model_goes_on():
    cfg = tiny_gpt2()
    model, plain = Transformer(cfg, dtype=np.float64, seed=1, threads=2), Transformer(cfg, dtype=np.float64, seed=1)
    rng = np.random.default_rng(5)
    x = rng.integers(cfg.vocab_size, size=(2, cfg.context_length + 1))
    with pytest.raises(TinyLMError, match="longer than the context"):
        model.loss_and_backward(x, x)
    x, y = x[:, :-1], x[:, 1:]
    assert model.loss_and_backward(x, y) == pytest.approx(plain.loss_and_backward(x, y), rel=1e-12)
    np.testing.assert_allclose(model.flat_grad, plain.flat_grad, rtol=1e-10, atol=1e-14)
    model.workers.processes[0].kill()  # as the kernel's out-of-memory killer would
    with pytest.raises(TinyLMError, match=r"worker process .* has died"):
        model.loss(x, y)
