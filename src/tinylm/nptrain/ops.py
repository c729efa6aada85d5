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
# Row blocks. An element-wise op is several passes over its arrays (GELU's forward is eight), and
# NumPy makes each pass a separate loop. Over a whole (N, 512) activation every pass goes out to
# memory; run block by block, a few hundred rows at a time, the block's arrays stay in the core's
# L2 cache (2 MB per core here), the inputs are read from memory once and the outputs written
# once, and the passes in between run about twice as fast. 64K elements per array is 256 KB in
# float32: the five or six arrays of a block fit.

BLOCK_ELEMENTS = 1 << 16


def row_blocks(x: np.ndarray) -> list[slice]:
    """Slices of x's first axis, each about BLOCK_ELEMENTS elements."""
    rows = max(1, BLOCK_ELEMENTS // max(1, x[0].size)) if len(x) else 1
    return [slice(i, i + rows) for i in range(0, len(x), rows)]


def row_sums(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis as a matrix-vector product: BLAS does short rows (a head, a model
    width) several times faster than NumPy's reduction, which runs one small loop per row."""
    return x @ np.ones(x.shape[-1], x.dtype)


def column_sums(x: np.ndarray) -> np.ndarray:
    """Sum over the rows of x (N, C), as a vector-matrix product for the same reason."""
    return np.ones(len(x), x.dtype) @ x

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
        db += column_sums(dy)
    return dy @ w


# ----------------------------------------------------------------------------------------------
# Embeddings: a row lookup, x[n] = E[idx[n]]


def embedding_backward(dx: np.ndarray, idx: np.ndarray, dE: np.ndarray) -> None:
    """Each row of E receives the gradients of every position that looked it up (a scatter-add:
    a token that occurs twice in the batch gets both rows' gradients). Sorted by token, each token's
    rows are adjacent and one np.add.reduceat sums every run: twice as fast as np.add.at."""
    order = np.argsort(idx, kind="stable")
    tokens = idx[order]
    starts = np.flatnonzero(np.r_[True, tokens[1:] != tokens[:-1]])  # where each token's run begins
    dE[tokens[starts]] += np.add.reduceat(dx[order], starts, axis=0)


# ----------------------------------------------------------------------------------------------
# LayerNorm: y = xhat * g + beta, xhat = (x - mean(x)) * rstd, rstd = 1 / sqrt(var(x) + eps)
# RMSNorm (Llama): y = xhat * g, xhat = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps)
#
# A norm always feeds linear layers, so its weight g and bias beta are folded into them (see
# `norm_linear_weight`): the norm ops here compute xhat alone, and their backward takes dL/dxhat.
# That saves the passes y = xhat * g + beta forward and g = dy * w, dg, dbeta backward: NumPy
# multiplying by a row (or a number per row) is several times slower than the small matrix products
# that replace them.


def layernorm_forward(x: np.ndarray, eps: float, ones: bool = False):
    """Returns xe = xhat (N, C), or [xhat | 1] (N, C + 1) with ones (the folded linear's bias input),
    and the cache (xhat, rstd)."""
    C = x.shape[-1]
    xhat, xe, rstd = _normed(x, ones)
    for r in row_blocks(x):
        xc = np.subtract(x[r], row_sums(x[r])[:, None] / C, out=xhat[r])
        rstd[r, 0] = 1.0 / np.sqrt(np.einsum("nc,nc->n", xc, xc) / C + eps)
        xc *= rstd[r]  # xhat
        if ones:
            xe[r, :C] = xc
    return xe, (xhat, rstd)


def layernorm_backward(dxhat: np.ndarray, cache, dx: np.ndarray | None = None) -> np.ndarray:
    """With g = dL/dxhat, and xhat_i = (x_i - mu) * rstd over the C features of a row:
        dmu/dx_i = 1/C,   drstd/dx_i = -rstd^3 (x_i - mu) / C = -rstd^2 xhat_i / C
    so  dxhat_j/dx_i = rstd (delta_ij - 1/C - xhat_j xhat_i / C), and summing over j:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    Overwrites dxhat. dx given: the gradient is ADDED to it (the residual stream's gradient, which
    passes the norm by)."""
    return _norm_backward(dxhat, cache, dx, centred=True)


def rmsnorm_forward(x: np.ndarray, eps: float, ones: bool = False):
    """As layernorm_forward, without the mean."""
    C = x.shape[-1]
    xhat, xe, rstd = _normed(x, ones)
    for r in row_blocks(x):
        rstd[r, 0] = 1.0 / np.sqrt(np.einsum("nc,nc->n", x[r], x[r]) / C + eps)
        np.multiply(x[r], rstd[r], out=xhat[r])
        if ones:
            xe[r, :C] = xhat[r]
    return xe, (xhat, rstd)


def rmsnorm_backward(dxhat: np.ndarray, cache, dx: np.ndarray | None = None) -> np.ndarray:
    """As LayerNorm without the mean: drstd/dx_i = -rstd^3 x_i / C = -rstd^2 xhat_i / C, so
        dx = rstd * (g - xhat * mean(g * xhat)),   g = dL/dxhat."""
    return _norm_backward(dxhat, cache, dx, centred=False)


def _normed(x: np.ndarray, ones: bool):
    """The norm's buffers: xhat, xe (xhat itself, or [xhat | 1] if ones), rstd. With ones xhat is
    copied into xe block by block while in cache: the norms' passes run 15% faster on a contiguous
    xhat than on rows of C + 1 numbers (NumPy then loops row by row)."""
    xhat = np.empty_like(x)
    xe = xhat if not ones else np.empty((len(x), x.shape[-1] + 1), x.dtype)
    if ones:
        xe[:, -1] = 1.0
    return xhat, xe, np.empty((len(x), 1), x.dtype)


def _norm_backward(dxhat, cache, dx, centred: bool) -> np.ndarray:
    """Both norms' backward, row block by row block (the formulas above)."""
    xhat, rstd = cache
    C = dxhat.shape[-1]
    dx = np.zeros_like(dxhat) if dx is None else dx
    for r in row_blocks(dxhat):
        g = dxhat[r]
        t = xhat[r] * (np.einsum("nc,nc->n", g, xhat[r]) / C)[:, None]  # xhat * mean(g * xhat)
        if centred:
            t += row_sums(g)[:, None] / C  # + mean(g)
        g -= t
        g *= rstd[r]
        dx[r] += g
    return dx


# ----------------------------------------------------------------------------------------------
# Norm then Linear, folded: with xn = xhat * g + beta the norm's output and y = xn W^T + b the linear,
#     y = xhat (W * g)^T + (b + W beta) = [xhat | 1] [W * g | b + W beta]^T
# one matrix product from the norm's xhat and a ones column, the bias inside it (an (N, out) pass
# of `y += b` fewer, for one more column in the product). g multiplies W's columns (g_i scales
# feature i). Without a norm bias or a linear bias, no ones column.


def norm_linear_weight(w: np.ndarray, b: np.ndarray | None, g: np.ndarray, beta: np.ndarray | None) -> np.ndarray:
    """[W * g | b + W beta] (out, in + 1), or W * g (out, in) when there is neither bias."""
    C = w.shape[1]
    extra = b is not None or beta is not None
    we = np.empty((len(w), C + extra), w.dtype)
    np.multiply(w, g, out=we[:, :C])
    if extra:
        we[:, C] = (0.0 if b is None else b) + (0.0 if beta is None else w @ beta)
    return we


def norm_linear_backward(dy: np.ndarray, xhat: np.ndarray, w: np.ndarray, we: np.ndarray, g: np.ndarray,
                         beta: np.ndarray | None, dw: np.ndarray, db: np.ndarray | None, dg: np.ndarray,
                         dbeta: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """xhat as the norm made it, we from `norm_linear_weight`. With M = dy^T xhat, s = dy^T 1 (the
    column sums of dy), and dxn = dL/dxn = dy W:
        dW_ji = sum_n dy_nj xn_ni = M_ji g_i + s_j beta_i,   db_j = s_j
        dg_i = sum_n dxn_ni xhat_ni = sum_n sum_j dy_nj W_ji xhat_ni = sum_j W_ji M_ji
        dbeta_i = sum_n dxn_ni = sum_j s_j W_ji
    small (out, in) operations instead of passes over (N, in). Returns dL/dxhat = dxn * g = dy (W * g).
    A norm feeding several linears (SwiGLU's w1 and w3) sums their dL/dxhat. (The products here take
    xhat and W * g as contiguous arrays: OpenBLAS is 4-8% slower on rows of C + 1 numbers.)"""
    C = w.shape[1]
    m = dy.T @ xhat
    dw += np.multiply(m, g)
    dg += np.einsum("jc,jc->c", w, m)
    if we.shape[1] > C:
        s = column_sums(dy)
        if beta is not None:
            dw += np.outer(s, beta)
            dbeta += s @ w
        if db is not None:
            db += s
    return dy @ np.ascontiguousarray(we[:, :C])


# ----------------------------------------------------------------------------------------------
# GELU, GPT-2's tanh form: y = u/2 (1 + tanh(k (u + a u^3))), k = sqrt(2/pi), a = 0.044715

GELU_K, GELU_A = math.sqrt(2.0 / math.pi), 0.044715


def gelu_tanh_forward(u: np.ndarray):
    """Returns y = u s and s = (1 + t)/2, t = tanh(k (u + a u^3)), which the backward needs."""
    y, s = np.empty_like(u), np.empty_like(u)
    for r in row_blocks(u):
        ur, sr = u[r], s[r]
        np.square(ur, out=sr)
        sr *= GELU_A * GELU_K
        sr += GELU_K
        sr *= ur
        np.tanh(sr, out=sr)
        sr *= 0.5
        sr += 0.5
        np.multiply(ur, sr, out=y[r])
    return y, s


def gelu_tanh_backward(dy: np.ndarray, u: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Product rule, with tanh' = 1 - tanh^2 and 1 - t^2 = (1 - t)(1 + t) = 4 s (1 - s):
        dy/du = s + u/2 (1 - t^2) k (1 + 3a u^2) = s + p s (1 - s),   p = u (2k + 6ak u^2):
    nine passes."""
    du = np.empty_like(u)
    rows = row_blocks(u)
    scratch = np.empty_like(u[rows[0]])
    for r in rows:
        ur, sr, d = u[r], s[r], du[r]
        np.square(ur, out=d)
        d *= 6.0 * GELU_A * GELU_K
        d += 2.0 * GELU_K
        d *= ur  # p
        q = np.subtract(1.0, sr, out=scratch[: len(d)])
        q *= sr
        d *= q
        d += sr
        d *= dy[r]
    return du


# ----------------------------------------------------------------------------------------------
# GELU, exact (nanoGPT): y = u Phi(u), Phi the standard normal CDF = (1 + erf(u / sqrt 2)) / 2


def _erf(x: np.ndarray) -> np.ndarray:
    """float32: the runtime's polynomial (error 1.5e-7, below float32's resolution); float64, which
    only gradient checks use: math.erf element by element, exact to the last bit and slow."""
    if x.dtype == np.float64:
        return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
    return erf(x)


def gelu_exact_forward(u: np.ndarray):
    y, cdf = np.empty_like(u), np.empty_like(u)
    for r in row_blocks(u):
        c = np.multiply(_erf(u[r] * (1.0 / math.sqrt(2.0))), 0.5, out=cdf[r])
        c += 0.5
        np.multiply(u[r], c, out=y[r])
    return y, cdf


def gelu_exact_backward(dy: np.ndarray, u: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """dy/du = Phi(u) + u phi(u), phi(u) = exp(-u^2/2) / sqrt(2 pi) the normal density."""
    du = np.empty_like(u)
    for r in row_blocks(u):
        d = np.multiply(u[r], u[r], out=du[r])
        d *= -0.5
        np.exp(d, out=d)
        d *= u[r] * (1.0 / math.sqrt(2.0 * math.pi))
        d += cdf[r]
        d *= dy[r]
    return du


# ----------------------------------------------------------------------------------------------
# SwiGLU (Llama): h = silu(a) * b, silu(a) = a sigmoid(a); a = x W1^T (gate), b = x W3^T (up)


def swiglu_forward(a: np.ndarray, b: np.ndarray):
    h, sig, silu = np.empty_like(a), np.empty_like(a), np.empty_like(a)
    for r in row_blocks(a):
        s = np.negative(a[r], out=sig[r])
        np.exp(s, out=s)
        s += 1.0
        np.reciprocal(s, out=s)  # sigmoid(a) = 1 / (1 + exp(-a))
        np.multiply(a[r], s, out=silu[r])
        np.multiply(silu[r], b[r], out=h[r])
    return h, (sig, silu)


def swiglu_backward(dh: np.ndarray, a: np.ndarray, b: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray]:
    """dh/db = silu(a);  dh/da = b silu'(a), and with sigmoid' = s (1 - s):
        silu'(a) = s + a s (1 - s) = s + silu - silu s."""
    sig, silu = cache
    da, db = np.empty_like(a), np.empty_like(a)
    for r in row_blocks(a):
        np.multiply(dh[r], silu[r], out=db[r])
        d = np.multiply(silu[r], sig[r], out=da[r])
        np.subtract(silu[r], d, out=d)
        d += sig[r]
        d *= b[r]
        d *= dh[r]
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
# - Tiles: one sequence b and one block of queries at a time, at most T x KV x (G * block) scores,
#   which stay in the CPU's L2 cache through the passes (two to four times faster than from memory).
# - Transposed scores, S^T, keys down, and across them every head's queries side by side: a tile is
#   (keys, KV, n*G). The softmax's max and sum over the keys then combine whole contiguous rows of
#   KV*n*G numbers (NumPy runs one small loop per row, so long rows are cheap), and subtracting the
#   max is one row broadcast (NumPy is several times slower broadcasting one number along each short
#   row). BLAS writes each kv head's product into its columns, and takes the transposes, for free.
# - The G query heads of a kv head are stacked, so one product per kv head serves them all: queries
#   are laid out (B, KV, T*G, hs), rows in the order (position, head), and a block of positions is a
#   slice of rows. OpenBLAS multiplies small matrices 1.5x faster when the right-hand one is stored
#   row by row rather than as a transposed view, so q (for S^T = k q^T) and dy (for dP^T = v dy^T)
#   are also kept transposed, (B, KV, hs, T*G): one small copy each instead of a slow product per tile.
# - Unnormalised: the tile keeps E = exp(S - max) and l = sum over the keys of E, so P = E / l, and
#   y = (E v) / l divides hs numbers per query instead of P's up to T (done as y is copied back into
#   (B, T, H*hs) order; the backward takes the 1/l the same way).
# - Causal: a block is scored only against the keys up to its end (for T = 256 and blocks of 64, 5/8
#   of T x T); inside the block's diagonal square the later keys get -inf (E = 0, no gradient).


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, block: int = 64):
    """Returns y (B, T, H*hs) and the cache: q (scaled) by kv head, k and v, E v, 1/l, and E^T per
    query block. k and v are kept as given (views are fine: BLAS reads them in place)."""
    B, T, H, hs = q.shape
    KV = k.shape[2]
    G = H // KV
    # q scaled by 1/sqrt(hs) as it is regrouped (a copy either way): cheaper than scaling the scores
    qh = np.multiply(q.reshape(B, T, KV, G, hs).transpose(0, 2, 1, 3, 4), 1.0 / math.sqrt(hs),
                     out=np.empty((B, KV, T, G, hs), q.dtype)).reshape(B, KV, T * G, hs)  # fmt: skip
    qT = np.ascontiguousarray(qh.transpose(0, 1, 3, 2))  # (B, KV, hs, T*G)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, KV, T, hs)
    ev, rl = np.empty_like(qh), np.empty((B, KV, T * G), q.dtype)  # E v and 1 / l, by query
    # (keys, KV, queries): G query columns per position, the same square for every kv head
    mask = np.ascontiguousarray(np.repeat(causal_mask(block, q.dtype), G, axis=0).T[:, None].repeat(KV, 1))
    ones = np.ones(T, q.dtype)
    es = []  # per query block: E^T (B, t1, KV, n*G), what the backward needs
    for t0 in range(0, T, block):
        t1 = min(t0 + block, T)
        n, c = (t1 - t0) * G, slice(t0 * G, t1 * G)  # the block's query rows
        es.append(np.empty((B, t1, KV, n), q.dtype))
        for b in range(B):
            et = es[-1][b]
            np.matmul(kh[b, :, :t1], qT[b, :, :, c], out=et.transpose(1, 0, 2))  # S^T, head by head
            et[t0:] += mask[: t1 - t0, :, :n]
            et -= et.max(0)  # softmax over the keys; the max shift changes nothing but overflow
            np.exp(et, out=et)
            np.divide(1.0, (ones[:t1] @ et.reshape(t1, KV * n)).reshape(KV, n), out=rl[b, :, c])
            np.matmul(et.transpose(1, 2, 0), vh[b, :, :t1], out=ev[b, :, c])
    # y = (E v) / l, the heads back beside each other
    y = np.multiply(ev.reshape(B, KV, T, G, hs).transpose(0, 2, 1, 3, 4), rl.reshape(B, KV, T, G, 1).transpose(0, 2, 1, 3, 4),
                    out=np.empty((B, T, KV, G, hs), q.dtype))  # fmt: skip
    return y.reshape(B, T, H * hs), (qh, kh, vh, ev, rl, es, block)


def attention_backward(dy: np.ndarray, cache, out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """dy (B, T, H*hs) -> dq (B, T, H, hs), dk, dv (B, T, KV, hs), tile by tile as the forward:
        y = P v                 ->  dP = dy v^T,  dv = P^T dy (summed over the G heads sharing v)
        P = softmax(S) by rows  ->  dS_ij = P_ij (dP_ij - D_i),  D_i = sum_j dP_ij P_ij
        S = q k^T / sqrt(hs)    ->  dq = dS k / sqrt(hs),  dk = dS^T q / sqrt(hs)
    and D_i = sum_j (dy_i . v_j) P_ij = dy_i . y_i, a dot product per query instead of a pass over the
    scores (FlashAttention's trick). With P_ij = E_ij / l_i, every term above has one factor P and one
    dy_i, so with dy'_i = dy_i / l_i the same formulas hold with E for P:
        dv = E^T dy',  dS_ij = E_ij (dy'_i . v_j - D'_i),  D'_i = dy'_i . y_i = dy'_i . (E v)_i / l_i.
    The cached q is already divided by sqrt(hs). Every query block adds into dk and dv. out: arrays
    (dq, dk, dv) to write into (views are fine), else new ones."""
    qh, kh, vh, ev, rl, es, block = cache
    B, KV, T, hs = kh.shape
    G = qh.shape[2] // T
    dq, dk, dv = out or (np.empty((B, T, KV * G, hs), dy.dtype), np.empty((B, T, KV, hs), dy.dtype),
                         np.empty((B, T, KV, hs), dy.dtype))  # fmt: skip
    dyh = np.multiply(dy.reshape(B, T, KV, G, hs).transpose(0, 2, 1, 3, 4), rl.reshape(B, KV, T, G, 1),
                      out=np.empty((B, KV, T, G, hs), dy.dtype)).reshape(qh.shape)  # fmt: skip
    # dS_ij = E_ij (dy'_i . v_j - D'_i) = E_ij ([dy'_i | -D'_i] . [v_j | 1]): the product gives dP - D
    # with one more term, instead of a pass subtracting D over the scores
    dyT = np.empty((B, KV, hs + 1, T * G), dy.dtype)  # [dy' | -D']^T
    dyT[:, :, :hs] = dyh.transpose(0, 1, 3, 2)
    np.multiply(np.einsum("bkth,bkth->bkt", dyh, ev), rl, out=dyT[:, :, hs])
    np.negative(dyT[:, :, hs], out=dyT[:, :, hs])
    v1 = np.empty((B, KV, T, hs + 1), dy.dtype)  # [v | 1]
    v1[..., :hs], v1[..., hs] = vh, 1.0
    dqh = np.empty_like(qh)
    dkh, dvh = np.empty(kh.shape, dy.dtype), np.empty(vh.shape, dy.dtype)  # (B, KV, T, hs): contiguous rows
    scratch = np.empty(T * KV * G * block, dy.dtype)
    # the last query block first: it sees all T keys, so its products initialise dk and dv (written
    # in place), and the earlier blocks add into their first t1 rows
    for t0, eb in reversed(list(zip(range(0, T, block), es, strict=True))):
        t1 = min(t0 + block, T)
        n, c = (t1 - t0) * G, slice(t0 * G, t1 * G)
        for b in range(B):
            et, dst = eb[b], scratch[: t1 * KV * n].reshape(t1, KV, n)
            _product_into(dvh[b, :, :t1], et.transpose(1, 0, 2), dyh[b, :, c], add=t1 < T)
            np.matmul(v1[b, :, :t1], dyT[b, :, :, c], out=dst.transpose(1, 0, 2))  # (dP - D)^T
            dst *= et  # dS^T
            _product_into(dkh[b, :, :t1], dst.transpose(1, 0, 2), qh[b, :, c], add=t1 < T)
            np.matmul(dst.transpose(1, 2, 0), kh[b, :, :t1], out=dqh[b, :, c])
    np.multiply(dqh.reshape(B, KV, T, G, hs).transpose(0, 2, 1, 3, 4), 1.0 / math.sqrt(hs), out=dq.reshape(B, T, KV, G, hs))
    dk[...], dv[...] = dkh.transpose(0, 2, 1, 3), dvh.transpose(0, 2, 1, 3)
    return dq, dk, dv


def _product_into(out: np.ndarray, a: np.ndarray, b: np.ndarray, add: bool) -> None:
    """out = a @ b, or out += a @ b."""
    if add:
        out += a @ b
    else:
        np.matmul(a, b, out=out)


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
    total = row_sums(logits)  # sum exp(z - max(z))
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
