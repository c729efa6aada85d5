"""The one tinylm model: a decoder-only transformer whose config picks GPT-2 or Llama 2 parts.

GPT-2:   learned positions, LayerNorm with bias, GELU MLP (4x), biases everywhere, tied embeddings.
Llama 2: RoPE, RMSNorm, SwiGLU MLP, no biases, grouped-query attention (n_kv_heads).
Both are pre-norm residual stacks:  x = x + attn(norm(x));  x = x + mlp(norm(x)).

RoPE rotates interleaved pairs (x[2i], x[2i+1]) as Meta's Llama, llama2.c and GGUF do; Hugging Face's
rotate-half layout differs by a permutation of the q/k projection rows (handled in tinylm.formats.hf).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.config import ModelConfig


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
    """Rotate each pair (x[2i], x[2i+1]) of x (B, T, H, hs) by the angles in cos/sin (T, hs/2)."""
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, T, H, hs/2) each
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, hs/2), broadcast over heads
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # q, k and v in one matmul: rows are [q (H*hs) | k (KV*hs) | v (KV*hs)]
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=cfg.bias)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        H, KV, hs = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * hs, KV * hs, KV * hs], dim=-1)
        q, k, v = q.view(B, T, H, hs), k.view(B, T, KV, hs), v.view(B, T, KV, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or KV, T, hs)
        fp32 = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if fp32:  # CPU autocast would attend in bf16, whose backward is ~6x slower than fp32's (PyTorch 2.x)
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, enable_gqa=KV != H
            )  # (B, H, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.wo(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias)  # GELU: fc; SwiGLU: gate
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=cfg.bias)  # projection back to the residual stream
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=cfg.bias) if self.swiglu else None  # SwiGLU: up
        self.gelu = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is not None:
            h = F.silu(self.w1(x)) * self.w3(x)
        else:
            h = self.gelu(self.w1(x))
        return self.drop(self.w2(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.mlp(self.mlp_norm(x))


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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids idx (B, T). The loss is not the model's business: a
        training objective (tinylm.train.objectives) turns logits into one."""
        T = idx.shape[1]
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.context_length})")
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if self.config.positions == "rope" else None
        x = self.drop(x)
        for block in self.layers:
            x = block(x, rope)
        return self.lm_head(self.norm(x))  # (B, T, vocab)
