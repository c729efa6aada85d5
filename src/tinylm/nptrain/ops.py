"""Every op of the tinylm transformer, its forward and its backward side by side (NumPy only).

Conventions. Activations are rows: x (N, C) with N = B*T tokens. A forward returns its output and
whatever its backward needs; a backward takes dy = dL/dy (same shape as y) and returns dL/dx, and
ADDS the gradients of the op's parameters into the arrays it is given (`+=`): a weight used twice
(a tied embedding) or a step of several micro-batches then simply sums its contributions.
Weights are stored as torch stores them, a Linear's as (out, in), so checkpoints are interchangeable.
The ops work in whatever float dtype they are given: float32 to train, float64 to check gradients.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm.runtime import erf

# ----------------------------------------------------------------------------------------------
# Linear: y = x W^T + b


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    y = np.matmul(x, w.T, out=out)  # (N, out)
    if b is not None:
        y += b
    return y


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, dw: np.ndarray, db: np.ndarray | None) -> np.ndarray:
    """y[n, j] = sum_i x[n, i] w[j, i] + b[j], so each input element reaches every output of its row:
        dL/dx[n, i] = sum_j dy[n, j] w[j, i]   ->  dx = dy W
        dL/dw[j, i] = sum_n dy[n, j] x[n, i]   ->  dW = dy^T x
        dL/db[j]    = sum_n dy[n, j]"""
    dw += dy.T @ x
    if db is not None:
        db += dy.sum(0)
    return dy @ w


# ----------------------------------------------------------------------------------------------
# Embeddings: a row lookup, x[n] = E[idx[n]]


def embedding_backward(dx: np.ndarray, idx: np.ndarray, dE: np.ndarray) -> None:
    """Each row of E receives the gradients of every position that looked it up (a scatter-add:
    a token that occurs twice in the batch gets both rows' gradients)."""
    np.add.at(dE, idx, dx)


# ----------------------------------------------------------------------------------------------
# LayerNorm: y = xhat * w + b, xhat = (x - mean(x)) * rstd, rstd = 1 / sqrt(var(x) + eps)


def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float):
    xc = x - x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, -1, keepdims=True) + eps)  # (N, 1)
    xhat = np.multiply(xc, rstd, out=xc)
    y = xhat * w
    if b is not None:
        y += b
    return y, (xhat, rstd)


def layernorm_backward(dy: np.ndarray, cache, w: np.ndarray, dw: np.ndarray, db: np.ndarray | None) -> np.ndarray:
    """With g = dL/dxhat = dy * w, and xhat_i = (x_i - mu) * rstd over the C features of a row:
        dmu/dx_i = 1/C,   drstd/dx_i = -rstd^3 (x_i - mu) / C = -rstd^2 xhat_i / C
    so  dxhat_j/dx_i = rstd (delta_ij - 1/C - xhat_j xhat_i / C), and summing over j:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    xhat, rstd = cache
    dw += np.einsum("nc,nc->c", dy, xhat)
    if db is not None:
        db += dy.sum(0)
    g = dy * w
    dx = g - g.mean(-1, keepdims=True)
    dx -= xhat * np.mean(g * xhat, -1, keepdims=True)
    dx *= rstd
    return dx


# ----------------------------------------------------------------------------------------------
# RMSNorm (Llama): y = xhat * w, xhat = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps)


def rmsnorm_forward(x: np.ndarray, w: np.ndarray, b: None, eps: float):
    rstd = 1.0 / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)  # (N, 1)
    xhat = x * rstd
    return xhat * w, (xhat, rstd)


def rmsnorm_backward(dy: np.ndarray, cache, w: np.ndarray, dw: np.ndarray, db: None) -> np.ndarray:
    """As LayerNorm without the mean: drstd/dx_i = -rstd^3 x_i / C = -rstd^2 xhat_i / C, so
        dx = rstd * (g - xhat * mean(g * xhat)),   g = dy * w."""
    xhat, rstd = cache
    dw += np.einsum("nc,nc->c", dy, xhat)
    g = dy * w
    dx = g - xhat * np.mean(g * xhat, -1, keepdims=True)
    dx *= rstd
    return dx


# ----------------------------------------------------------------------------------------------
# GELU, GPT-2's tanh form: y = u/2 (1 + tanh(k (u + a u^3))), k = sqrt(2/pi), a = 0.044715

GELU_K, GELU_A = math.sqrt(2.0 / math.pi), 0.044715


def gelu_tanh_forward(u: np.ndarray):
    t = u * u
    t *= GELU_A * GELU_K
    t += GELU_K
    t *= u
    np.tanh(t, out=t)  # tanh(k (u + a u^3))
    y = t + 1.0
    y *= u
    y *= 0.5
    return y, t


def gelu_tanh_backward(dy: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Product rule, with tanh' = 1 - tanh^2:
        dy/du = (1 + t)/2 + u/2 (1 - t^2) k (1 + 3a u^2).
    (Written as in-place steps: the MLP's activations are the widest arrays after the logits.)"""
    g = u * u
    g *= 3.0 * GELU_A * 0.5 * GELU_K
    g += 0.5 * GELU_K
    g *= u  # u/2 k (1 + 3a u^2)
    s = t * t
    np.subtract(1.0, s, out=s)
    g *= s
    g += 0.5
    s = np.multiply(t, 0.5, out=s)
    g += s
    g *= dy
    return g


# ----------------------------------------------------------------------------------------------
# GELU, exact (nanoGPT): y = u Phi(u), Phi the standard normal CDF = (1 + erf(u / sqrt 2)) / 2


def _erf(x: np.ndarray) -> np.ndarray:
    """float32: the runtime's polynomial (error 1.5e-7, below float32's resolution); float64, which
    only gradient checks use: math.erf element by element, exact to the last bit and slow."""
    if x.dtype == np.float64:
        return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
    return erf(x)


def gelu_exact_forward(u: np.ndarray):
    cdf = 0.5 * (1.0 + _erf(u * (1.0 / math.sqrt(2.0))))
    return u * cdf, cdf


def gelu_exact_backward(dy: np.ndarray, u: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """dy/du = Phi(u) + u phi(u), phi(u) = exp(-u^2/2) / sqrt(2 pi) the normal density."""
    return dy * (cdf + u * np.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi)))


# ----------------------------------------------------------------------------------------------
# SwiGLU (Llama): h = silu(a) * b, silu(a) = a sigmoid(a); a = x W1^T (gate), b = x W3^T (up)


def swiglu_forward(a: np.ndarray, b: np.ndarray):
    sig = 1.0 / (1.0 + np.exp(-a))
    silu = a * sig
    return silu * b, (sig, silu)


def swiglu_backward(dh: np.ndarray, a: np.ndarray, b: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray]:
    """dh/db = silu(a);  dh/da = b silu'(a), and with sigmoid' = s (1 - s):
        silu'(a) = s + a s (1 - s) = s (1 + a (1 - s))."""
    sig, silu = cache
    db = dh * silu
    da = dh * b
    da *= sig * (1.0 + a * (1.0 - sig))
    return da, db


# ----------------------------------------------------------------------------------------------
# RoPE: rotate each pair (x[2i], x[2i+1]) of a head by the angle p * theta^(-2i/hs) of its position p


def rope_rotation(length: int, head_dim: int, theta: float, dtype: np.dtype) -> np.ndarray:
    """e^(i angle) for every (position, pair), (length, 1, head_dim/2): a pair read as the complex
    number x[2i] + i x[2i+1] is rotated by one complex product (broadcast over heads)."""
    freqs = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(length, dtype=np.float64), freqs)
    return np.exp(1j * angles)[:, None, :].astype(np.result_type(dtype, np.complex64))


def rope_forward(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """x (B, T, heads, hs), its last axis contiguous; rotation (T, 1, hs/2). Returns a new array."""
    return (x.view(rotation.dtype) * rotation).view(x.dtype)


def rope_backward(dy: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """A rotation R is orthogonal, so dx = R^T dy = R^-1 dy: rotate back by the conjugate."""
    return (dy.view(rotation.dtype) * rotation.conj()).view(dy.dtype)


# ----------------------------------------------------------------------------------------------
# Causal attention with grouped-query heads: query head h reads key/value head h // G (G = H / KV).
# q (B, T, H, hs), k and v (B, T, KV, hs).  S = q k^T / sqrt(hs),  P = softmax(S + mask),  y = P v.
#
# The scores are B*H*T*T numbers that the softmax and its backward walk over several times: element-
# wise work, not BLAS work, so the layout is chosen for NumPy's element-wise loops:
# - Tiles: one sequence b and one block of queries at a time, at most KV x T x (G * block) scores,
#   which stay in the CPU's L2 cache through the passes (two to four times faster than from memory).
# - Transposed scores, S^T (keys down, queries across): the softmax's max and sum over the keys then
#   combine whole contiguous rows, and subtracting or dividing by them is a contiguous row operation
#   (NumPy is several times slower broadcasting one number along each short row). BLAS takes the
#   transposes for free.
# - The G query heads of a kv head are stacked, so one product per kv head serves them all: queries
#   are laid out (B, KV, T, G, hs), and a block of positions is (KV, n*G, hs) in the order (position,
#   head), without a copy.
# - Causal: a block is scored only against the keys up to its end (for T = 256 and blocks of 64, 5/8
#   of T x T); inside the block's diagonal square the later keys get -inf (P = 0, no gradient).


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, block: int = 64):
    """Returns y (B, T, H*hs) and the cache: q (scaled), k, v and y by head, and P^T per query block."""
    B, T, H, hs = q.shape
    KV = k.shape[2]
    G = H // KV
    # q scaled by 1/sqrt(hs) as it is regrouped (a copy either way): cheaper than scaling the scores
    qh = np.multiply(q.reshape(B, T, KV, G, hs).transpose(0, 2, 1, 3, 4), 1.0 / math.sqrt(hs),
                     out=np.empty((B, KV, T, G, hs), q.dtype))  # fmt: skip
    kh, vh = np.ascontiguousarray(k.transpose(0, 2, 1, 3)), np.ascontiguousarray(v.transpose(0, 2, 1, 3))  # (B, KV, T, hs)
    yh = np.empty_like(qh)
    mask = np.repeat(causal_mask(block, q.dtype), G, axis=0).T  # (keys, queries): G query rows per position
    scratch = np.empty(KV * T * G * block, q.dtype)
    ps = []  # per query block: P^T (B, KV, t1, n*G), what the backward needs
    for t0 in range(0, T, block):
        t1 = min(t0 + block, T)
        n = t1 - t0
        ps.append(np.empty((B, KV, t1, n * G), q.dtype))
        for b in range(B):
            qt = qh[b, :, t0:t1].reshape(KV, n * G, hs)
            st = np.matmul(kh[b, :, :t1], qt.transpose(0, 2, 1), out=scratch[: KV * t1 * n * G].reshape(KV, t1, n * G))
            st[:, t0:] += mask[:n, : n * G]
            st -= st.max(1, keepdims=True)  # softmax over the keys; the max shift changes nothing but overflow
            np.exp(st, out=st)
            pt = np.divide(st, st.sum(1, keepdims=True), out=ps[-1][b])
            np.matmul(pt.transpose(0, 2, 1), vh[b, :, :t1], out=yh[b, :, t0:t1].reshape(KV, n * G, hs))
    y = yh.transpose(0, 2, 1, 3, 4).reshape(B, T, H * hs)  # heads back beside each other: a copy
    return y, (qh, kh, vh, yh, ps, block)


def attention_backward(dy: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (B, T, H*hs) -> dq (B, T, H, hs), dk, dv (B, T, KV, hs), tile by tile as the forward:
        y = P v                 ->  dP = dy v^T,  dv = P^T dy (summed over the G heads sharing v)
        P = softmax(S) by rows  ->  dS_ij = P_ij (dP_ij - D_i),  D_i = sum_j dP_ij P_ij
        S = q k^T / sqrt(hs)    ->  dq = dS k / sqrt(hs),  dk = dS^T q / sqrt(hs)
    and D_i = sum_j (dy_i . v_j) P_ij = dy_i . y_i, a dot product per query instead of a pass over the
    scores (FlashAttention's trick). The cached q is already divided by sqrt(hs). Every query block adds
    into dk and dv."""
    qh, kh, vh, yh, ps, block = cache
    B, KV, T, G, hs = qh.shape
    dyh = np.ascontiguousarray(dy.reshape(B, T, KV, G, hs).transpose(0, 2, 1, 3, 4))  # (B, KV, T, G, hs)
    D = np.einsum("bktgh,bktgh->bktg", dyh, yh)  # (B, KV, T, G)
    dqh = np.empty_like(qh)
    dk, dv = np.zeros_like(kh), np.zeros_like(vh)  # (B, KV, T, hs)
    scratch = np.empty(KV * T * G * block, dy.dtype)
    for t0, pb in zip(range(0, T, block), ps, strict=True):
        t1 = min(t0 + block, T)
        n = t1 - t0
        for b in range(B):
            pt, dyt, qt = pb[b], dyh[b, :, t0:t1].reshape(KV, n * G, hs), qh[b, :, t0:t1].reshape(KV, n * G, hs)
            dv[b, :, :t1] += pt @ dyt
            dst = np.matmul(vh[b, :, :t1], dyt.transpose(0, 2, 1), out=scratch[: KV * t1 * n * G].reshape(KV, t1, n * G))
            dst -= D[b, :, t0:t1].reshape(KV, 1, n * G)  # dP^T, then dS^T in place
            dst *= pt
            dk[b, :, :t1] += dst @ qt
            np.matmul(dst.transpose(0, 2, 1), kh[b, :, :t1], out=dqh[b, :, t0:t1].reshape(KV, n * G, hs))
    dqh *= 1.0 / math.sqrt(hs)
    dq = dqh.transpose(0, 2, 1, 3, 4).reshape(B, T, KV * G, hs)
    return dq, dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)


def causal_mask(T: int, dtype: np.dtype) -> np.ndarray:
    """(T, T): 0 where a query (row) may see a key (column), -inf after it."""
    return np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)


# ----------------------------------------------------------------------------------------------
# Cross-entropy over the vocabulary, mean over the positions whose target is not -1


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """logits (N, V), targets (N,). Overwrites logits with the softmax probabilities (the backward
    needs them, and the logits are not needed again); returns (mean loss, probs)."""
    logits -= logits.max(-1, keepdims=True)  # z - max(z): exp cannot overflow
    valid = targets >= 0
    rows = np.flatnonzero(valid)
    picked = logits[rows, targets[rows]]  # z[t] - max(z), a copy
    np.exp(logits, out=logits)
    total = logits.sum(-1)  # sum exp(z - max(z))
    logits /= total[:, None]
    # -log softmax(z)[t] = log sum exp(z - max) - (z[t] - max)
    nll = np.log(total[rows]) - picked
    loss = float(nll.sum(dtype=np.float64) / rows.size) if rows.size else math.nan
    return loss, logits


def cross_entropy_backward(probs: np.ndarray, targets: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """L = mean_n (logsumexp(z_n) - z_n[t_n]) over the n valid rows, so
        dL/dz_n = (softmax(z_n) - onehot(t_n)) / n_valid, and 0 on ignored rows.
    In place on probs; `scale` multiplies the loss (1 / micro-batches when accumulating)."""
    valid = targets >= 0
    rows = np.flatnonzero(valid)
    probs[rows, targets[rows]] -= 1.0
    probs[~valid] = 0.0
    probs *= scale / max(rows.size, 1)
    return probs
