"""Every op's backward against centred finite differences of its forward, in float64."""

from __future__ import annotations

import numpy as np
import pytest

from tinylm.nptrain import ops

RNG = np.random.default_rng(0)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """(f(x + h e_i) - f(x - h e_i)) / 2h for every element i of x (changed in place, then restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def assert_close(analytic: np.ndarray, numeric: np.ndarray) -> None:
    scale = max(np.abs(analytic).max(), np.abs(numeric).max())
    assert scale > 1e-8, "a zero gradient checks nothing"
    assert np.abs(analytic - numeric).max() / scale < 1e-6


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def check(forward, backward, inputs: list[np.ndarray]) -> None:
    """forward(*inputs) -> y; backward(dy) -> the analytic gradients of sum(y * r) for each input."""
    r = randn(*np.shape(forward(*inputs)))
    analytic = backward(r)
    for x, g in zip(inputs, analytic, strict=True):
        assert_close(g, numeric_grad(lambda: float(np.sum(forward(*inputs) * r)), x))


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    x, w, b = randn(5, 4), randn(3, 4), randn(3) if bias else None

    def backward(dy):
        dw, db = np.zeros_like(w), np.zeros_like(b) if bias else None
        dx = ops.linear_backward(dy, x, w, dw, db)
        return [dx, dw, db] if bias else [dx, dw]

    check(lambda *a: ops.linear_forward(x, w, b), backward, [x, w, b] if bias else [x, w])


def test_embedding_accumulates_repeated_tokens():
    E, idx = randn(6, 3), np.array([1, 4, 1, 0, 1])

    def backward(dy):
        dE = np.zeros_like(E)
        ops.embedding_backward(dy, idx, dE)
        return [dE]

    check(lambda e: e[idx], backward, [E])


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("ones", [True, False])
def test_norms(kind, ones):
    forward = ops.rmsnorm_forward if kind == "rmsnorm" else ops.layernorm_forward
    backward = ops.rmsnorm_backward if kind == "rmsnorm" else ops.layernorm_backward
    x = randn(4, 6)
    xe = forward(x, 1e-5, ones)[0]
    assert xe.shape == (4, 7 if ones else 6) and (xe[:, -1] == 1).all() == ones
    check(lambda v: forward(v, 1e-5, ones)[0][:, :6], lambda g: [backward(g.copy(), forward(x, 1e-5, ones)[1])], [x])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("norm_bias", [True, False])
def test_norm_linear(bias, norm_bias):
    """The folded y = (xhat * g + beta) W^T + b against finite differences of that unfolded formula,
    and its forward equal to it."""
    xhat, w, g = randn(5, 4), randn(3, 4), randn(4)
    b, beta = randn(3) if bias else None, randn(4) if norm_bias else None
    unfolded = lambda: ops.linear_forward(xhat * g + (0.0 if beta is None else beta), w, b)  # noqa: E731
    ones = bias or norm_bias
    xe = np.hstack([xhat, np.ones((5, 1))]) if ones else xhat
    we = ops.norm_linear_weight(w, b, g, beta)
    np.testing.assert_allclose(xe @ we.T, unfolded(), rtol=1e-12)

    def backward(dy):
        dw, dg = np.zeros_like(w), np.zeros_like(g)
        db, dbeta = np.zeros_like(b) if bias else None, np.zeros_like(beta) if norm_bias else None
        dxhat = ops.norm_linear_backward(dy, xhat, w, we, g, beta, dw, db, dg, dbeta)
        return [dxhat, dw, dg] + ([db] if bias else []) + ([dbeta] if norm_bias else [])

    inputs = [xhat, w, g] + ([b] if bias else []) + ([beta] if norm_bias else [])
    check(lambda *a: unfolded(), backward, inputs)


@pytest.mark.parametrize("form", ["tanh", "exact"])
def test_gelu(form):
    forward = ops.gelu_tanh_forward if form == "tanh" else ops.gelu_exact_forward
    backward = ops.gelu_tanh_backward if form == "tanh" else ops.gelu_exact_backward
    u = 2 * randn(4, 5)
    check(lambda v: forward(v)[0], lambda dy: [backward(dy, u, forward(u)[1])], [u])


def test_swiglu():
    a, b = 2 * randn(4, 5), randn(4, 5)
    check(lambda *x: ops.swiglu_forward(a, b)[0],
          lambda dh: list(ops.swiglu_backward(dh, a, b, ops.swiglu_forward(a, b)[1])), [a, b])  # fmt: skip


def test_rope():
    x = randn(2, 5, 3, 8)
    rotation = ops.rope_rotation(5, 8, 10000.0, np.float64)
    check(lambda v: ops.rope_forward(v, rotation), lambda dy: [ops.rope_backward(dy, rotation)], [x])


@pytest.mark.parametrize("block", [64, 2])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention(kv_heads, block):
    """Grouped-query heads, in one query block and in blocks of 2 positions (5 = 2 + 2 + 1)."""
    B, T, H, hs = 2, 5, 4, 3
    q, k, v = randn(B, T, H, hs), randn(B, T, kv_heads, hs), randn(B, T, kv_heads, hs)
    check(lambda *a: ops.attention_forward(q, k, v, block)[0],
          lambda dy: list(ops.attention_backward(dy, ops.attention_forward(q, k, v, block)[1])), [q, k, v])  # fmt: skip


def test_attention_is_causal_and_blocks_change_nothing():
    """Changing a later token changes nothing at earlier positions; blocks give the one-block result."""
    q, k, v = randn(1, 6, 2, 4), randn(1, 6, 2, 4), randn(1, 6, 2, 4)
    y = ops.attention_forward(q, k, v)[0]
    np.testing.assert_allclose(ops.attention_forward(q, k, v, block=4)[0], y, rtol=1e-13, atol=1e-15)
    k[0, 4:], v[0, 4:] = randn(2, 2, 4), randn(2, 2, 4)
    y2 = ops.attention_forward(q, k, v)[0]
    np.testing.assert_array_equal(y[0, :4], y2[0, :4])
    assert not np.allclose(y[0, 4:], y2[0, 4:])


def test_cross_entropy_with_ignored_targets():
    z, t = randn(6, 7), np.array([3, -1, 0, 6, -1, 2])

    def loss():
        return ops.cross_entropy_forward(z.copy(), t)[0]

    probs = ops.cross_entropy_forward(z.copy(), t)[1]
    analytic = ops.cross_entropy_backward(probs, t, scale=0.5)
    assert_close(analytic, 0.5 * numeric_grad(loss, z))
    assert not analytic[[1, 4]].any()
    # the loss itself: mean of -log softmax at the four scored rows
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert loss() == pytest.approx(-np.mean(logp[[0, 2, 3, 5], [3, 0, 6, 2]]), rel=1e-12)
