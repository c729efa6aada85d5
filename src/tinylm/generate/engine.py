"""The torch engine: a static, preallocated KV cache driven over the Model's own weights (gpt-fast style).

The cache holds, per layer, keys and values as (batch, kv_heads, context, head_size) tensors made
once per batch size. Every row of a batch has its own position, so prompts of different lengths are
simply right-padded: a pad token's key lands at a position the row overwrites before it ever attends
there, and the mask `key position <= query position` hides everything a row has not written.
Attention reads only the cache prefix that some row has filled, like llama2.c's run.c. One code
path serves prefill (T prompt tokens at once) and decode (T = 1), so both write and mask the cache
the same way. With `compile=True` the decode step is one torch.compile graph for a batch size,
symbolic in the attention length, so it compiles once and never again as the sequence grows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.model import MLP, Model, apply_rope


class TorchEngine:
    """Batched next-token logits from a `Model` with a static KV cache.

    `prefill(prompts, length)` starts a generation; each `decode(tokens)` appends one token per row.
    `compile=True` compiles the decode step with torch.compile (slow to start, fast per token).
    `transpose_weights=True` stores every Linear weight of the model transposed in place: same values
    and memory, and the model still works, but one token's `x @ W.T` then streams through a row-major
    (in, out) matrix, measured 6-7% faster per token; it is for a model the engine owns (loaded from
    a checkpoint), since the weights are no longer contiguous (`.view()` on them fails).
    """

    def __init__(self, model: Model, compile: bool = False, transpose_weights: bool = False):
        self.model = model  # its dropout modules are never called, so train/eval mode does not matter
        if transpose_weights:
            for m in model.modules():
                if isinstance(m, torch.nn.Linear) and m is not model.lm_head:  # the head is copied below
                    m.weight.data = m.weight.data.t().contiguous().t()
        self.config = cfg = model.config
        self.device = model.tok_emb.weight.device
        self.dtype = model.tok_emb.weight.dtype
        self.head_t = torch.empty(0)  # see _refresh_head
        self._head_seen: tuple[int, int] | None = None
        self.rope = (model.rope_cos, model.rope_sin) if cfg.positions == "rope" else None
        self.compiled = compile
        self._decode = self._forward
        if compile:  # on CPU a C++ wrapper around the generated kernels saves Python work per token
            options = {"cpp_wrapper": True} if self.device.type == "cpu" else {}
            self._decode = torch.compile(self._forward, fullgraph=True, options=options)
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.pos = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's next position
        # cache positions any row has written / may write / had written after prefill (host-side: no sync)
        self.filled = self.limit = self.prefilled = 0

    def _allocate(self, batch: int) -> None:
        """Caches spanning the whole context, made once per batch size: attention reads only the
        filled prefix, so their size costs memory, not time, and the compiled step never sees a
        new cache shape."""
        if self.k_cache and self.k_cache[0].shape[0] == batch:
            return
        cfg, length = self.config, self.config.context_length
        shape = (batch, cfg.kv_heads, length, cfg.head_dim)
        # zeros, not empty: a masked position still multiplies its value by a zero weight, and NaN * 0 is NaN
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(cfg.n_layers)]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(cfg.n_layers)]
        # flat row index of (row b, kv head h) in a cache viewed as (batch * kv_heads * length, head_size)
        self._row_base = (
            torch.arange(batch * cfg.kv_heads, device=self.device).view(batch, cfg.kv_heads, 1) * length
        )
        self._key_pos = torch.arange(length, device=self.device)

    def _refresh_head(self) -> None:
        """Keep `head_t`, a (dim, vocab) copy of the output head: `x @ head_t` multiplies fastest for
        one row at a time. It is copied again only when the weight has changed since (training
        between generations bumps the tensor's version)."""
        w = self.model.lm_head.weight
        if self._head_seen != (w.data_ptr(), w._version):
            self.head_t = w.detach().t().contiguous()
            self._head_seen = (w.data_ptr(), w._version)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], length: int) -> np.ndarray:
        """Start a generation whose rows use at most `length` positions: run all prompts at once and
        return the logits (B, vocab) after each prompt's last token."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise TinyLMError("every prompt needs at least one token")
        longest = max(len(p) for p in prompts)
        if longest > length or length > self.config.context_length:
            raise TinyLMError(
                f"cannot hold {length} positions (longest prompt {longest}) in a context of {self.config.context_length}"
            )
        self._allocate(len(prompts))
        self._refresh_head()
        lens = torch.tensor([len(p) for p in prompts], device=self.device)
        idx = torch.tensor([p + [0] * (longest - len(p)) for p in prompts], device=self.device)
        pos = torch.arange(longest, device=self.device).expand(len(prompts), longest)
        logits = self._forward(idx, pos, lens - 1, self._key_pos[:longest])
        self.pos, self.filled, self.limit, self.prefilled = lens.clone(), longest, length, longest
        return _numpy(logits)

    @torch.inference_mode()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Append one token per row (B,) at each row's next position; logits (B, vocab)."""
        if self.filled >= self.limit:
            raise TinyLMError(f"this generation was started for {self.limit} positions and they are all used")
        self.filled += 1
        keys = self._key_pos[: self.filled]
        if self.compiled:  # one graph for every attention length
            torch._dynamo.maybe_mark_dynamic(keys, 0)
        tokens_t = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(self.device).view(-1, 1)
        args = (tokens_t, self.pos.view(-1, 1), None, keys)
        if self.compiled and self.filled > self.prefilled + 2:
            # Past the first steps of a generation (which compile if needed) its inputs keep their
            # shapes and identities, so checking dynamo's guards on every weight is wasted work.
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                logits = self._decode(*args)
        else:
            logits = self._decode(*args)
        self.pos += 1
        return _numpy(logits)

    def _forward(self, idx: torch.Tensor, pos: torch.Tensor, last: torch.Tensor | None,
                 keys: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Tokens idx at positions pos (both (B, T)): write their keys/values into the cache, attend
        over the cache positions `keys` (0..n-1) and return the logits at column `last` of each row
        (B,), or at the only column when T == 1."""
        model, cfg = self.model, self.config
        B, T = idx.shape
        H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # the residual stream is 2-D (B*T, dim): 3-D size-1 dims lead inductor to strides the matmul copies
        x = F.embedding(idx.flatten(), model.tok_emb.weight)
        if model.pos_emb is not None:
            x = x + F.embedding(pos.flatten(), model.pos_emb.weight)
        rope = None
        if self.rope is not None:  # one (position, frequency) row per token, as a batch of one sequence
            rope = (self.rope[0][pos.flatten()], self.rope[1][pos.flatten()])
        slots = (self._row_base + pos.view(B, 1, T)).flatten()  # cache rows written, ordered (B, KV, T)
        n = keys.shape[0]
        mask = keys.view(1, 1, 1, n) <= pos.view(B, 1, T, 1)  # (B, 1, T, n)
        for i, layer in enumerate(model.layers):
            attn = layer.attn
            q, k, v = attn.wqkv(layer.attn_norm(x)).split([H * hs, KV * hs, KV * hs], dim=-1)
            q, k, v = q.view(1, B * T, H, hs), k.view(1, B * T, KV, hs), v.view(B, T, KV, hs)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            k = k.view(B, T, KV, hs)
            self.k_cache[i].view(-1, hs).index_copy_(0, slots, k.transpose(1, 2).reshape(-1, hs))
            self.v_cache[i].view(-1, hs).index_copy_(0, slots, v.transpose(1, 2).reshape(-1, hs))
            y = _attend(q.view(B, T, H, hs), self.k_cache[i][:, :, :n], self.v_cache[i][:, :, :n], mask)
            x = x + attn.wo(y.view(B * T, H * hs))
            x = x + _mlp(layer.mlp, layer.mlp_norm(x))
        if last is not None:  # prefill: each row's last prompt token
            x = x[torch.arange(B, device=x.device) * T + last]
        return model.norm(x) @ self.head_t


def _mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """`mlp(x)` without its dropout, whatever the module's train/eval mode."""
    if mlp.w3 is not None:
        return mlp.w2(F.silu(mlp.w1(x)) * mlp.w3(x))
    return mlp.w2(mlp.gelu(mlp.w1(x)))


def _numpy(logits: torch.Tensor) -> np.ndarray:
    """float32 NumPy logits for the shared sampler (a view, not a copy, of float32 CPU tensors)."""
    return logits.float().cpu().numpy()


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of queries q (B, T, H, hs) over cached keys/values (B, KV, S, hs) where mask (B, 1, T, S)
    allows; returns (B, T, H * hs). Query head h reads kv head h // (H // KV), as in grouped-query attention."""
    B, T, H, hs = q.shape
    KV = k.shape[1]
    q = q.view(B, T, KV, H // KV, hs).permute(0, 2, 3, 1, 4).reshape(B, KV, -1, hs)  # (B, KV, G*T, hs)
    scores = (q @ k.transpose(-1, -2)).view(B, KV, H // KV, T, -1) * hs**-0.5
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1)
    y = scores.view(B, KV, -1, k.shape[2]) @ v  # (B, KV, G*T, hs)
    return y.view(B, KV, H // KV, T, hs).permute(0, 3, 1, 2, 4).reshape(B, T, H * hs)
