"""The tinylm transformer for training in NumPy: a forward pass that keeps what the backward needs,
and the backward pass written out, op by op (the ops are in `tinylm.nptrain.ops`).

All parameters live in ONE flat array (and their gradients in another), each named tensor a view
into it, in the order of torch's `Model.parameters()` with the matrices (which AdamW decays) first.
So AdamW and gradient clipping are a few whole-array operations, and position i of the order is the
index torch's optimizer state uses, which makes optimizer checkpoints interchangeable.

    model = Transformer(cfg)                          # float32, initialised like tinylm.model.Model
    loss = model.loss_and_backward(x, y)              # x, y (B, T) int arrays; gradients in model.grads

Threads: NumPy runs one element-wise operation on one core, so with threads > 1 the batch's sequences
are split between that many processes instead (data parallelism, `tinylm.nptrain.parallel`): this one
and forked workers, each with its own activations and gradients, summed at the end; BLAS then runs
one thread per call. Parameters and gradients are in memory the processes share.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.layout import linear_shapes, tensor_layout, tensor_shapes
from tinylm.nptrain import ops
from tinylm.nptrain.parallel import Workers, shared_zeros


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint layout (tinylm.layout) in `Model.named_parameters()` order, the
    order torch registers the modules in: embeddings; per block attn_norm, attn, mlp_norm, mlp; norm; head."""
    shapes = tensor_shapes(tensor_layout(cfg))
    linears = list(linear_shapes(cfg))
    block = [f"{part}.{kind}" for group in ("attn", "mlp")
             for part in (f"{group}_norm", *(n for n in linears if n.startswith(f"{group}.")))
             for kind in ("weight", "bias")]  # fmt: skip
    names = ["tok_emb.weight", "pos_emb.weight", *(f"layers.{i}.{n}" for i in range(cfg.n_layers) for n in block),
             "norm.weight", "norm.bias", "lm_head.weight"]  # fmt: skip
    return {n: shapes[n] for n in names if n in shapes}


def optimizer_order(cfg: ModelConfig) -> list[str]:
    """The parameters as torch's AdamW numbers them: the decayed (>= 2-D) group, then the rest."""
    shapes = parameter_shapes(cfg)
    return [n for n, s in shapes.items() if len(s) >= 2] + [n for n, s in shapes.items() if len(s) < 2]


class Pass:
    """What one forward pass keeps for its backward (per layer, and for the embeddings and head), and
    the gradients that backward adds into: the model's own, or a thread's (see `Transformer`)."""

    def __init__(self, flat_grad: np.ndarray, grads: dict[str, np.ndarray]):
        self.flat_grad, self.grads = flat_grad, grads
        self.acts: list[SimpleNamespace] = []  # per layer
        self.top = SimpleNamespace()
        self.logits = np.empty(0, flat_grad.dtype)  # the largest activation, (N, vocab): reused across steps


class Transformer:
    """tinylm.model.Model in NumPy, for training: `forward` keeps every activation its `backward`
    needs; `backward` adds the gradients into `grads` (views of `flat_grad`, as `params` are of `flat`).
    threads > 1: `loss_and_backward` and `loss` split the batch between that many processes."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray] | None = None, *,
                 dtype: type = np.float32, seed: int = 0, threads: int = 1):  # fmt: skip
        if cfg.dropout:
            raise TinyLMError("the NumPy trainer has no dropout; train with --dropout 0 or --engine torch")
        self.config, self.dtype = cfg, np.dtype(dtype)
        shapes = parameter_shapes(cfg)
        self.names = optimizer_order(cfg)
        self.n_decay = sum(int(np.prod(shapes[n])) for n in self.names if len(shapes[n]) >= 2)
        zeros = shared_zeros if threads > 1 else np.zeros  # shared with the worker processes
        self.flat = zeros(sum(int(np.prod(s)) for s in shapes.values()), self.dtype)
        self.flat_grad = zeros(self.flat.size, self.dtype)
        self.offsets, at = {}, 0
        for n in self.names:
            self.offsets[n] = at
            at += int(np.prod(shapes[n]))
        self.params, self.grads = self._views(self.flat), self._views(self.flat_grad)
        if weights is None:
            self._init_weights(seed)
        else:
            self.load(weights)
        self.norm_fwd, self.norm_bwd = ((ops.rmsnorm_forward, ops.rmsnorm_backward) if cfg.norm == "rmsnorm"
                                        else (ops.layernorm_forward, ops.layernorm_backward))  # fmt: skip
        if cfg.mlp == "gelu":
            self.gelu_fwd, self.gelu_bwd = ((ops.gelu_tanh_forward, ops.gelu_tanh_backward) if cfg.gelu == "tanh"
                                            else (ops.gelu_exact_forward, ops.gelu_exact_backward))  # fmt: skip
        if cfg.positions == "rope":
            self.rotation = ops.rope_rotation(cfg.context_length, cfg.head_dim, cfg.rope_theta, self.dtype)
        # one pass per process; the first adds into the model's gradients, the others into their own
        self.passes = [Pass(self.flat_grad, self.grads)]
        for _ in range(threads - 1):
            flat_grad = shared_zeros(self.flat.size, self.dtype)
            self.passes.append(Pass(flat_grad, self._views(flat_grad)))
        self.workers = Workers(threads - 1, self._loss) if threads > 1 else None

    def _views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Every named tensor as a view into a flat array laid out as `self.flat`."""
        shapes = parameter_shapes(self.config)
        return {n: flat[at : at + int(np.prod(shapes[n]))].reshape(shapes[n]) for n, at in self.offsets.items()}

    def _init_weights(self, seed: int) -> None:
        """As tinylm.model.Model (other random numbers): N(0, 0.02) matrices and embeddings, the two
        projections into the residual stream scaled by 1/sqrt(2 n_layers), zero biases, unit norms."""
        rng = np.random.default_rng(seed)
        for n, p in self.params.items():
            if p.ndim >= 2:
                std = 0.02 / np.sqrt(2 * self.config.n_layers) if n.endswith(("attn.wo.weight", "mlp.w2.weight")) else 0.02
                p[...] = rng.normal(0.0, std, p.shape)
            elif n.endswith("norm.weight"):
                p[...] = 1.0

    def load(self, weights: dict[str, np.ndarray]) -> None:
        """Copy in a checkpoint's tensors (a tied head's lm_head.weight, if present, must be tok_emb)."""
        missing = sorted(set(self.params) - set(weights))
        extra = sorted(set(weights) - set(self.params) - ({"lm_head.weight"} if self.config.tie_embeddings else set()))
        if missing or extra:
            what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {extra[0]}"
            raise TinyLMError(f"weights do not fit the model: {what}; weights and config.json disagree")
        for n, p in self.params.items():
            if tuple(weights[n].shape) != p.shape:
                raise TinyLMError(f"tensor {n} has shape {tuple(weights[n].shape)} but the model needs {p.shape}")
            p[...] = weights[n]

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as a checkpoint stores them (copies, float32)."""
        return {n: self.params[n].astype(np.float32) for n in parameter_shapes(self.config)}

    def num_params(self) -> int:
        return self.flat.size

    def zero_grad(self) -> None:
        self.flat_grad.fill(0.0)

    # ---- forward and backward of the whole model

    def forward(self, idx: np.ndarray, run: Pass | None = None) -> np.ndarray:
        """Logits (B, T, vocab) for token ids idx (B, T), keeping the activations for `backward` in
        `run` (default: the model's own pass). The logits live in a buffer the next forward (and the
        loss, in place) overwrites."""
        cfg, P, run = self.config, self.params, run or self.passes[0]
        B, T = idx.shape
        if T > cfg.context_length:
            raise TinyLMError(f"sequence of {T} tokens is longer than the context ({cfg.context_length})")
        top = run.top
        top.idx, top.shape = idx.reshape(-1), (B, T)
        x = P["tok_emb.weight"][top.idx]  # (N, C), N = B*T
        if cfg.positions == "learned":
            x.reshape(B, T, -1)[...] += P["pos_emb.weight"][:T]
        run.acts = []
        for i in range(cfg.n_layers):
            x = self._block_forward(f"layers.{i}.", x, run)
        xf, top.norm, top.w = self._norm_forward(x, "norm.", [self._head()])
        if run.logits.shape != (B * T, cfg.vocab_size):
            run.logits = np.empty((B * T, cfg.vocab_size), self.dtype)
        return np.matmul(xf, top.w[0].T, out=run.logits).reshape(B, T, -1)

    def backward(self, dlogits: np.ndarray, run: Pass | None = None) -> None:
        """Add the gradients of every parameter, given dL/dlogits (B, T, vocab), to the pass's grads."""
        cfg, run = self.config, run or self.passes[0]
        G, top = run.grads, run.top
        B, T = top.shape
        dx = self._norm_backward([dlogits.reshape(B * T, -1)], top.norm, top.w, "norm.", [self._head()], run)
        for i in reversed(range(cfg.n_layers)):
            dx = self._block_backward(f"layers.{i}.", run.acts[i], dx, run)
        if cfg.positions == "learned":  # added to every sequence of the batch: sum over B
            G["pos_emb.weight"][:T] += dx.reshape(B, T, -1).sum(0)
        ops.embedding_backward(dx, top.idx, G["tok_emb.weight"])

    def _head(self) -> str:
        return "tok_emb." if self.config.tie_embeddings else "lm_head."

    def _norm_forward(self, x: np.ndarray, norm: str, linears: list[str]):
        """The norm `norm` (a name prefix) of x and the weights of the linears it feeds, its own weight
        and bias folded in (ops.norm_linear_weight): returns xe ([xhat | 1] or xhat), the linears' input,
        and the norm's cache (xhat, ...) and the folded weights, what `_norm_backward` needs."""
        P = self.params
        beta = P.get(norm + "bias")
        ones = beta is not None or any(P.get(n + "bias") is not None for n in linears)
        xe, cache = self.norm_fwd(x, self.config.norm_eps, ones)
        ws = [ops.norm_linear_weight(P[n + "weight"], P.get(n + "bias"), P[norm + "weight"], beta) for n in linears]
        return xe, cache, ws

    def _norm_backward(self, dys: list[np.ndarray], cache, ws: list[np.ndarray], norm: str,
                       linears: list[str], run: Pass, dx: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Backward of `_norm_forward` and its linears, given each linear's dL/dy; adds into dx."""
        P, G = self.params, run.grads
        dxhat = None
        for dy, n, we in zip(dys, linears, ws, strict=True):
            d = ops.norm_linear_backward(dy, cache[0], P[n + "weight"], we, P[norm + "weight"], P.get(norm + "bias"),
                                         G[n + "weight"], G.get(n + "bias"), G[norm + "weight"], G.get(norm + "bias"))  # fmt: skip
            dxhat = d if dxhat is None else np.add(dxhat, d, out=dxhat)
        return self.norm_bwd(dxhat, cache, dx)

    def loss_and_backward(self, idx: np.ndarray, targets: np.ndarray, scale: float = 1.0) -> float:
        """Mean cross-entropy of the batch; adds the gradients of `scale` * loss to self.grads."""
        loss, parts = self._split(idx, targets, scale, backward=True)
        for run in self.passes[1:parts]:  # the workers' gradients, summed in a fixed order (same sums every run)
            self.flat_grad += run.flat_grad
            run.flat_grad.fill(0.0)
        return loss

    def loss(self, idx: np.ndarray, targets: np.ndarray) -> float:
        return self._split(idx, targets, 1.0, backward=False)[0]

    def _loss(self, part: int, idx: np.ndarray, targets: np.ndarray, scale: float, backward: bool) -> float:
        """The loss of a part of the batch, and its backward, in the process of pass `part`."""
        run = self.passes[part]
        logits = self.forward(idx, run)
        t = targets.reshape(-1)
        loss, probs = ops.cross_entropy_forward(logits.reshape(t.size, -1), t)
        if backward:
            self.backward(ops.cross_entropy_backward(probs, t, scale), run)
        return loss

    def _split(self, idx: np.ndarray, targets: np.ndarray, scale: float, backward: bool) -> tuple[float, int]:
        """`_loss` of each process's part of the batch, part 0 here; returns the mean loss over all
        scored targets, each part's mean weighted by its share of them (the share also weights the
        part's gradients), and the number of parts."""
        if self.workers is None or len(idx) < 2:
            return self._loss(0, idx, targets, scale, backward), 1
        parts = [p for p in np.array_split(np.arange(len(idx)), len(self.passes)) if p.size]
        scored = [int((targets[p] >= 0).sum()) for p in parts]
        shares = [n / max(sum(scored), 1) for n in scored]
        for i in range(1, len(parts)):
            self.workers.send(i, idx[parts[i]], targets[parts[i]], scale * shares[i], backward)
        try:
            ours = self._loss(0, idx[parts[0]], targets[parts[0]], scale * shares[0], backward)
        finally:  # the workers' answers, even when this part failed: the next call must not read them
            theirs = self.workers.results(list(range(1, len(parts))))
        losses = [ours, *theirs]
        loss = sum(loss * share for loss, share in zip(losses, shares, strict=True) if share) if any(shares) else math.nan
        return loss, len(parts)

    # ---- one block:  x = x + attn(norm(x));  x = x + mlp(norm(x))

    def _mlp_in(self, p: str) -> list[str]:
        """The MLP's input linears: w1, and SwiGLU's w3 (its order in swiglu_forward: gate, up)."""
        return [p + "mlp.w1.", p + "mlp.w3."] if self.config.mlp == "swiglu" else [p + "mlp.w1."]

    def _block_forward(self, p: str, x: np.ndarray, run: Pass) -> np.ndarray:
        cfg, P, (B, T) = self.config, self.params, run.top.shape
        H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        a = SimpleNamespace()
        run.acts.append(a)
        xn, a.norm1, a.attn_w = self._norm_forward(x, p + "attn_norm.", [p + "attn.wqkv."])
        qkv = (xn @ a.attn_w[0].T).reshape(B, T, H + 2 * KV, hs)  # heads [q (H) | k (KV) | v (KV)]
        if cfg.positions == "rope":  # q and k rotated in one product
            qkv[:, :, : H + KV] = ops.rope_forward(qkv[:, :, : H + KV], self.rotation[:T])
        y, a.att = ops.attention_forward(qkv[:, :, :H], qkv[:, :, H : H + KV], qkv[:, :, H + KV :])
        a.y = y.reshape(B * T, H * hs)
        x += ops.linear_forward(a.y, P[p + "attn.wo.weight"], P.get(p + "attn.wo.bias"))  # x is ours: no copy
        xn, a.norm2, a.mlp_w = self._norm_forward(x, p + "mlp_norm.", self._mlp_in(p))
        a.u = xn @ a.mlp_w[0].T
        if cfg.mlp == "swiglu":
            a.up = xn @ a.mlp_w[1].T
            a.h, a.act = ops.swiglu_forward(a.u, a.up)
        else:
            a.h, a.act = self.gelu_fwd(a.u)
        x += ops.linear_forward(a.h, P[p + "mlp.w2.weight"], P.get(p + "mlp.w2.bias"))
        return x

    def _block_backward(self, p: str, a: SimpleNamespace, dx: np.ndarray, run: Pass) -> np.ndarray:
        """dx = dL/d(block output) -> dL/d(block input). A residual x + f(x) passes dx straight
        through and adds f's own backward of dx."""
        cfg, P, G, (B, T) = self.config, self.params, run.grads, run.top.shape
        H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # MLP branch
        dh = ops.linear_backward(dx, a.h, P[p + "mlp.w2.weight"], G[p + "mlp.w2.weight"], G.get(p + "mlp.w2.bias"))
        dus = list(ops.swiglu_backward(dh, a.u, a.up, a.act)) if cfg.mlp == "swiglu" else [self.gelu_bwd(dh, a.u, a.act)]
        self._norm_backward(dus, a.norm2, a.mlp_w, p + "mlp_norm.", self._mlp_in(p), run, dx)
        # attention branch
        dy = ops.linear_backward(dx, a.y, P[p + "attn.wo.weight"], G[p + "attn.wo.weight"], G.get(p + "attn.wo.bias"))
        dqkv = np.empty((B, T, H + 2 * KV, hs), self.dtype)
        ops.attention_backward(dy, a.att, out=(dqkv[:, :, :H], dqkv[:, :, H : H + KV], dqkv[:, :, H + KV :]))
        if cfg.positions == "rope":
            dqkv[:, :, : H + KV] = ops.rope_backward(dqkv[:, :, : H + KV], self.rotation[:T])
        return self._norm_backward([dqkv.reshape(B * T, -1)], a.norm1, a.attn_w, p + "attn_norm.", [p + "attn.wqkv."],
                                   run, dx)  # fmt: skip
