"""Weight and config mapping between tinylm and Hugging Face `LlamaForCausalLM` / `GPT2LMHeadModel`.

Two conventions differ from ours:
- RoPE: we (like Meta and llama2.c) rotate interleaved pairs (x0,x1),(x2,x3)...; HF rotates the first
  half of each head against the second. Permuting the rows of q/k projections per head converts.
- GPT-2's Conv1D layers store weights as (in, out); nn.Linear stores (out, in).
"""

from __future__ import annotations

from typing import Any

import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError

Tensors = dict[str, torch.Tensor]
# HF's names for the two GELU forms (transformers' ACT2FN)
GPT2_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def hf_architecture(cfg: ModelConfig) -> str:
    if cfg.norm == "rmsnorm" and cfg.positions == "rope" and cfg.mlp == "swiglu":
        return "LlamaForCausalLM"
    if cfg.norm == "layernorm" and cfg.positions == "learned" and cfg.mlp == "gelu" and cfg.bias \
            and cfg.kv_heads == cfg.n_heads:  # fmt: skip
        return "GPT2LMHeadModel"
    raise TinyLMError(
        "this model mixes GPT-2 and Llama parts, which no Hugging Face architecture holds; "
        "use norm/positions/mlp = rmsnorm/rope/swiglu (Llama) or layernorm/learned/gelu with biases (GPT-2)"
    )


def interleaved_to_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k projection rows from interleaved-pair RoPE (ours) to HF's rotate-half layout."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def to_hf_config(cfg: ModelConfig, bos_id: int | None = None, eos_id: int | None = None) -> dict[str, Any]:
    """The `config.json` of the equivalent HF model."""
    arch = hf_architecture(cfg)
    if arch == "LlamaForCausalLM":
        return {
            "architectures": [arch], "model_type": "llama", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
            "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "tie_word_embeddings": cfg.tie_embeddings,
            "attention_dropout": 0.0, "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": "float32",
        }  # fmt: skip
    return {
        "architectures": [arch], "model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length,
        "n_embd": cfg.dim, "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.ffn_dim,
        "activation_function": "gelu_new" if cfg.gelu == "tanh" else "gelu", "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": "float32",
    }  # fmt: skip


def from_hf_config(hf: dict[str, Any]) -> ModelConfig:
    """Our config for an HF `config.json` of a Llama- or GPT-2-architecture model."""
    kind = hf.get("model_type")
    try:
        if kind in ("llama", "mistral") and not hf.get("sliding_window"):
            rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
            if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
                raise TinyLMError(f"RoPE scaling {rope.get('rope_type')!r} is not supported; only plain RoPE")
            n_heads = hf["num_attention_heads"]
            if hf.get("head_dim") not in (None, hf["hidden_size"] // n_heads):
                raise TinyLMError(f"head_dim {hf['head_dim']} != hidden_size / heads; not supported")
            return ModelConfig(
                vocab_size=hf["vocab_size"], context_length=hf.get("max_position_embeddings", 2048),
                n_layers=hf["num_hidden_layers"], n_heads=n_heads,
                n_kv_heads=hf.get("num_key_value_heads") or n_heads, dim=hf["hidden_size"],
                hidden_dim=hf["intermediate_size"], norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
                positions="rope", rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                mlp="swiglu", bias=bool(hf.get("attention_bias", False)),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)), family="llama",
            )  # fmt: skip
        if kind == "gpt2":
            act = hf.get("activation_function", "gelu_new")
            if act not in GPT2_GELU:
                raise TinyLMError(f"GPT-2 activation {act!r} is not supported; only {', '.join(GPT2_GELU)}")
            return ModelConfig(
                vocab_size=hf["vocab_size"], context_length=hf.get("n_positions", 1024), n_layers=hf["n_layer"],
                n_heads=hf["n_head"], dim=hf["n_embd"], hidden_dim=hf.get("n_inner") or 4 * hf["n_embd"],
                norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), positions="learned", mlp="gelu",
                gelu=GPT2_GELU[act], bias=True, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                family="gpt2",
            )  # fmt: skip
    except KeyError as e:
        raise TinyLMError(f"Hugging Face config lacks the field {e.args[0]!r}") from None
    raise TinyLMError(f"Hugging Face model_type {kind!r} is not supported; tinylm reads llama and gpt2 models")


def to_hf_state_dict(cfg: ModelConfig, sd: Tensors) -> Tensors:
    """Our state dict (tied head stored once, as from checkpoint.model_state_dict) -> HF names/layouts."""
    H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    out: Tensors = {}
    llama = hf_architecture(cfg) == "LlamaForCausalLM"
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        if llama:
            h = f"model.layers.{i}."
            for ours, theirs in (("weight", "weight"), ("bias", "bias")):
                if p + f"attn.wqkv.{ours}" not in sd:
                    continue
                q, k, v = sd[p + f"attn.wqkv.{ours}"].split([H * hs, KV * hs, KV * hs])
                out[h + f"self_attn.q_proj.{theirs}"] = _permute_rows(q, H, interleaved_to_half)
                out[h + f"self_attn.k_proj.{theirs}"] = _permute_rows(k, KV, interleaved_to_half)
                out[h + f"self_attn.v_proj.{theirs}"] = v
            names = {"attn.wo": "self_attn.o_proj", "mlp.w1": "mlp.gate_proj", "mlp.w3": "mlp.up_proj",
                     "mlp.w2": "mlp.down_proj", "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}  # fmt: skip
            for ours, theirs in names.items():
                for suffix in ("weight", "bias"):
                    if f"{p}{ours}.{suffix}" in sd:
                        out[f"{h}{theirs}.{suffix}"] = sd[f"{p}{ours}.{suffix}"]
        else:
            h = f"transformer.h.{i}."
            names = {"attn.wqkv": "attn.c_attn", "attn.wo": "attn.c_proj", "mlp.w1": "mlp.c_fc", "mlp.w2": "mlp.c_proj"}
            for ours, theirs in names.items():
                out[f"{h}{theirs}.weight"] = sd[f"{p}{ours}.weight"].t().contiguous()  # Conv1D is (in, out)
                out[f"{h}{theirs}.bias"] = sd[f"{p}{ours}.bias"]
            for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
                out[f"{h}{theirs}.weight"], out[f"{h}{theirs}.bias"] = sd[f"{p}{ours}.weight"], sd[f"{p}{ours}.bias"]
    if llama:
        out["model.embed_tokens.weight"] = sd["tok_emb.weight"]
        out["model.norm.weight"] = sd["norm.weight"]
    else:
        out["transformer.wte.weight"] = sd["tok_emb.weight"]
        out["transformer.wpe.weight"] = sd["pos_emb.weight"]
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["norm.weight"], sd["norm.bias"]
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["tok_emb.weight"])
    return out


def from_hf_state_dict(cfg: ModelConfig, hf: Tensors) -> Tensors:
    """HF tensors -> our state dict (tied head stored once). Raises TinyLMError naming a missing tensor."""
    H, KV = cfg.n_heads, cfg.kv_heads

    def get(name: str) -> torch.Tensor:
        if name not in hf:
            raise TinyLMError(f"Hugging Face weights lack tensor {name!r}; the model files are incomplete")
        return hf[name]

    out: Tensors = {}
    llama = hf_architecture(cfg) == "LlamaForCausalLM"
    if not llama and "wte.weight" in hf:  # OpenAI's original GPT-2 files on the Hub lack the "transformer." prefix
        hf = {(k if k.startswith("lm_head") else "transformer." + k): v for k, v in hf.items()}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        if llama:
            h = f"model.layers.{i}."
            suffixes = ("weight", "bias") if cfg.bias else ("weight",)
            for s in suffixes:
                q = _permute_rows(get(f"{h}self_attn.q_proj.{s}"), H, half_to_interleaved)
                k = _permute_rows(get(f"{h}self_attn.k_proj.{s}"), KV, half_to_interleaved)
                out[f"{p}attn.wqkv.{s}"] = torch.cat([q, k, get(f"{h}self_attn.v_proj.{s}")])
                for ours, theirs in (("attn.wo", "self_attn.o_proj"), ("mlp.w1", "mlp.gate_proj"),
                                     ("mlp.w3", "mlp.up_proj"), ("mlp.w2", "mlp.down_proj")):  # fmt: skip
                    out[f"{p}{ours}.{s}"] = get(f"{h}{theirs}.{s}")
            out[p + "attn_norm.weight"] = get(h + "input_layernorm.weight")
            out[p + "mlp_norm.weight"] = get(h + "post_attention_layernorm.weight")
        else:
            h = f"transformer.h.{i}."
            for ours, theirs in (("attn.wqkv", "attn.c_attn"), ("attn.wo", "attn.c_proj"),
                                 ("mlp.w1", "mlp.c_fc"), ("mlp.w2", "mlp.c_proj")):  # fmt: skip
                out[f"{p}{ours}.weight"] = get(f"{h}{theirs}.weight").t().contiguous()
                out[f"{p}{ours}.bias"] = get(f"{h}{theirs}.bias")
            for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
                out[f"{p}{ours}.weight"], out[f"{p}{ours}.bias"] = get(f"{h}{theirs}.weight"), get(f"{h}{theirs}.bias")
    out["tok_emb.weight"] = get("model.embed_tokens.weight" if llama else "transformer.wte.weight")
    if llama:
        out["norm.weight"] = get("model.norm.weight")
    else:
        out["pos_emb.weight"] = get("transformer.wpe.weight")
        out["norm.weight"], out["norm.bias"] = get("transformer.ln_f.weight"), get("transformer.ln_f.bias")
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = get("lm_head.weight")
    return out


def _permute_rows(w: torch.Tensor, n_heads: int, fn: Any) -> torch.Tensor:
    """Apply a RoPE row permutation to a weight (rows, cols) or a bias (rows,)."""
    return fn(w, n_heads) if w.dim() == 2 else fn(w[:, None], n_heads)[:, 0]
