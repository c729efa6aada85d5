"""The one tinylm model: a decoder-only transformer whose config picks GPT-2 or Llama 2 parts.

GPT-2:   learned positions, LayerNorm with bias, GELU MLP (4x), biases everywhere, tied embeddings.
Llama 2: RoPE, RMSNorm, SwiGLU MLP, no biases, grouped-query attention (n_kv_heads).
Both are pre-norm residual stacks:  x = x + attn(norm(x));  x = x + mlp(norm(x)).

RoPE rotates interleaved pairs (x[2i], x[2i+1]) as Meta's Llama, llama2.c and GGUF do; Hugging Face's
rotate-half layout differs by a permutation of the q/k projection rows (handled in tinylm.formats.hf).

One forward pass serves training and generation. Without a cache it is the plain causal pass over
positions 0..T-1. With a `KVCache` (gpt-fast style: static, preallocated) every row of the batch
has its own positions `pos`; each layer writes its new keys/values into the cache, and attends
either over just those new tokens (a prompt prefilled from position 0) or over the cache prefix
(decode). Every matmul goes through a module call (`self.wqkv(x)`, `self.lm_head(x)`), never
through `.weight`, so a quantized or LoRA module with nn.Linear's call signature fits any slot.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from tinylm import small_attention
from tinylm.config import ModelConfig
from tinylm.head_loss import head_loss


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps, bias=cfg.bias)


def rope_tables(cfg: ModelConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, frequency) pair, each (length, head_dim // 2)."""
    freqs = cfg.rope_theta ** (-torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[2i], x[2i+1]) of x (..., T, H, hs) by the angles in cos/sin (..., T, hs/2):
    (T, hs/2) when every row sits at positions 0..T-1, (B, T, hs/2) or (B*T, hs/2) per row."""
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (..., T, H, hs/2) each
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # (..., T, 1, hs/2), broadcast over heads
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class KVCache:
    """Keys and values of every layer for `rows` sequences over the whole context, allocated once:
    attention reads only the prefix some row has written, so the size costs memory, not time, and a
    compiled decode step never sees a new cache shape. Zeros, not empty: a masked position still
    multiplies its value by a zero weight, and NaN * 0 is NaN.

    Before each forward the caller says which cache rows the batch uses and what it attends to:
      rows: (B,) cache row of each batch row; None means rows 0..B-1 (a view: no gather).
      keys: (n,) the cache positions 0..n-1 to attend over (decode); None means attend over the new
            tokens only, which is right for a prompt that starts at position 0 (prefill).
    """

    def __init__(self, cfg: ModelConfig, rows: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):  # fmt: skip
        shape = (rows, cfg.kv_heads, cfg.context_length, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.rows: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.k[0].shape[0]


class _CacheStep:
    """What every layer's cached attention needs, worked out once per forward."""

    def __init__(self, cache: KVCache, pos: torch.Tensor):
        B, T = pos.shape
        _, KV, length, _ = cache.k[0].shape
        self.cache, self.B, self.T = cache, B, T
        self.rows = cache.rows
        rows = torch.arange(B, device=pos.device) if cache.rows is None else cache.rows
        # flat index of (row, kv head, position) in a layer's cache viewed as (rows * KV * length, hs),
        # ordered (B, KV, T) like the keys written there
        base = (rows.view(B, 1) * KV + torch.arange(KV, device=pos.device)).view(B, KV, 1) * length
        self.slots = (base + pos.view(B, 1, T)).flatten()
        self.keys = cache.keys
        # decode: a query at position p sees the cache positions <= p that its row has written
        self.mask = None if cache.keys is None else cache.keys.view(1, 1, 1, -1) <= pos.view(B, 1, T, 1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # q, k and v in one matmul: rows are [q (H*hs) | k (KV*hs) | v (KV*hs)]
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=cfg.bias)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias)
        self.dropout = cfg.dropout  # on the attention weights; Block drops from the output

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv: tuple[int, _CacheStep] | None = None) -> torch.Tensor:  # fmt: skip
        if kv is not None:
            return self.wo(self._cached(x, rope, *kv))
        B, T, C = x.shape
        H, KV, hs = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * hs, KV * hs, KV * hs], dim=-1)
        q, k, v = q.view(B, T, H, hs), k.view(B, T, KV, hs), v.view(B, T, KV, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        fp32 = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if fp32:  # CPU autocast would attend in bf16, whose backward is ~6x slower than fp32's (PyTorch 2.x)
            q, k, v = q.float(), k.float(), v.float()
        dropout = self.dropout if self.training else 0.0
        if small_attention.applies(q, dropout):  # small heads on the CPU: our kernel, faster than SDPA there
            return self.wo(small_attention.small_attention(q, k, v).view(B, T, C))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or KV, T, hs)
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, enable_gqa=KV != H)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, hs) -> (B, T, C)
        return self.wo(y)

    def _cached(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, layer: int,
                step: _CacheStep) -> torch.Tensor:  # fmt: skip
        """Attention of tokens x (B*T, C) through the cache: store their keys/values, then attend
        over the new tokens (prefill) or the cache prefix (decode); returns (B*T, C)."""
        B, T, H, KV, hs = step.B, step.T, self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * hs, KV * hs, KV * hs], dim=-1)
        q, k, v = q.view(B * T, H, hs), k.view(B * T, KV, hs), v.view(B, T, KV, hs)
        if rope is not None:  # one (position, frequency) row per token
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        k = k.view(B, T, KV, hs)
        k_cache, v_cache = step.cache.k[layer], step.cache.v[layer]  # (rows, KV, context, hs)
        k_cache.view(-1, hs).index_copy_(0, step.slots, k.transpose(1, 2).reshape(-1, hs))
        v_cache.view(-1, hs).index_copy_(0, step.slots, v.transpose(1, 2).reshape(-1, hs))
        q = q.view(B, T, H, hs)
        if step.keys is None:  # prefill from position 0: the new tokens are all there is to see
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=KV != H
            )  # (B, H, T, hs)
            return y.transpose(1, 2).reshape(B * T, H * hs)
        n = step.keys.shape[0]
        if step.rows is None:  # rows 0..B-1: slices are views, no copy of the cache
            k_cache, v_cache = k_cache[:B, :, :n], v_cache[:B, :, :n]
        else:
            k_cache, v_cache = k_cache[step.rows, :, :n], v_cache[step.rows, :, :n]
        return _attend(q, k_cache, v_cache, step.mask).view(B * T, H * hs)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of queries q (B, T, H, hs) over cached keys/values (B, KV, S, hs) where mask (B, 1, T, S)
    allows; returns (B, T, H * hs). Query head h reads kv head h // (H // KV), as in grouped-query
    attention. Written out rather than SDPA with a mask: for one query per row it decodes faster
    on CPU (measured), and the G query heads of a kv head become one matmul."""
    B, T, H, hs = q.shape
    KV = k.shape[1]
    q = q.view(B, T, KV, H // KV, hs).permute(0, 2, 3, 1, 4).reshape(B, KV, -1, hs)  # (B, KV, G*T, hs)
    scores = (q @ k.transpose(-1, -2)).view(B, KV, H // KV, T, -1) * hs**-0.5
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1)
    y = scores.view(B, KV, -1, k.shape[2]) @ v  # (B, KV, G*T, hs)
    return y.view(B, KV, H // KV, T, hs).permute(0, 3, 1, 2, 4).reshape(B, T, H * hs)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)  # GELU: fc; SwiGLU: gate
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)  # projection back to the residual stream
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias) if self.swiglu else None  # SwiGLU: up
        self.gelu_tanh = cfg.gelu == "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is not None:
            h = F.silu(self.w1(x)) * self.w3(x)
        else:
            h = gelu(self.w1(x), self.gelu_tanh)
        return self.w2(h)


def gelu(x: torch.Tensor, tanh: bool) -> torch.Tensor:
    """GELU, GPT-2's tanh form or the exact one. Compiled, the tanh form is written x * sigmoid(2u), which equals
    0.5 x (1 + tanh(u)): Inductor's vectorized tanh is ~4x slower than the exp a sigmoid lowers to (CPU, 4096 x 512:
    forward ~4x, forward and backward ~2x faster; the tanh GELU was ~9% of a compiled gpt-micro training step). Eager, F.gelu is faster."""
    if not tanh:
        return F.gelu(x)
    if not torch.compiler.is_compiling():
        return F.gelu(x, approximate="tanh")
    return x * torch.sigmoid(math.sqrt(8 / math.pi) * (x + 0.044715 * x * x * x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)  # on what each branch adds to the residual stream

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv: tuple[int, _CacheStep] | None = None) -> torch.Tensor:  # fmt: skip
        if kv is not None:  # generation never drops out, and skipping the calls saves eager decode time
            x = x + self.attn(self.attn_norm(x), rope, kv)
            return x + self.mlp(self.mlp_norm(x))
        x = x + self.drop(self.attn(self.attn_norm(x), rope))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.dim) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        if self.tok_emb.weight.is_meta:
            return  # shapes only, to load weights into; see checkpoint.build_model
        self.init_buffers()
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream by 1/sqrt(2 * n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("attn.wo.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def init_buffers(self, device: torch.device | str | None = None) -> None:
        """Compute the tables that are not learned (and not saved); rerun after building on "meta"."""
        if self.config.positions == "rope":
            cos, sin = rope_tables(self.config, self.config.context_length)
            self.register_buffer("rope_cos", cos.to(device), persistent=False)
            self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() counts a tied weight once

    def forward(self, idx: torch.Tensor, *, pos: torch.Tensor | None = None, cache: KVCache | None = None,
                logits_at: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Logits (B, T, vocab) for token ids idx (B, T). A training objective (tinylm.train.objectives) turns
        logits into a loss; given `targets` (B, T; -1 where not scored) the model returns their mean next-token
        cross-entropy itself, through tinylm.head_loss, which on the CPU in float32 never stores the logits.

        For generation: `pos` (B, T) gives each token's position (default 0..T-1 in every row);
        `cache` stores keys/values and attends through them (see KVCache); `logits_at` (B,) picks
        one column per row (a prompt's last token) and returns (B, vocab), so a prefill does not
        compute the output head over the whole prompt."""
        B, T = idx.shape
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.context_length})")
        positions = torch.arange(T, device=idx.device) if pos is None else pos  # (T,) or (B, T)
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        rope = None
        if self.config.positions == "rope":  # (T, hs/2) each, or (B, T, hs/2): a row of angles per token
            rope = (self.rope_cos[:T], self.rope_sin[:T]) if pos is None else (self.rope_cos[pos], self.rope_sin[pos])
        if cache is None:
            x = self.drop(x)
            for block in self.layers:
                x = block(x, rope)
        else:  # generation: no dropout, whatever the train/eval mode
            # the residual stream is 2-D (B*T, C) through the cache: with 3-D size-1 dims inductor
            # picks strides that the one-token decode matmuls must copy
            x = x.view(B * T, -1)
            if rope is not None:  # one row of angles per token, like the residual stream
                cos, sin = (r.expand(B, T, -1).reshape(B * T, -1) for r in rope)
                rope = (cos, sin)
            step = _CacheStep(cache, positions.expand(B, T))
            for i, block in enumerate(self.layers):
                x = block(x, rope, (i, step))
        if logits_at is not None:  # one column per row: (B, C)
            x = x.view(B, T, -1)[torch.arange(B, device=x.device), logits_at]
            return self.lm_head(self.norm(x))  # (B, vocab)
        if targets is not None:
            return head_loss(self.lm_head, self.norm(x).view(B, T, -1), targets)
        return self.lm_head(self.norm(x)).reshape(B, T, -1)  # (B, T, vocab)
