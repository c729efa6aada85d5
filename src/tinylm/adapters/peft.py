"""A LoRA adapter in Hugging Face PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`,
which `PeftModel.from_pretrained` puts on our Hugging Face export of the base (tinylm.formats.hf_folder).

Names follow the HF export: Llama's fused wqkv is q_proj/k_proj/v_proj there, so each slice's update goes
to its own projection; HF's q/k rows are a per-head permutation of ours (rotate-half RoPE), and so are
the rows of their B matrices. GPT-2 keeps q, k and v fused in c_attn (a Conv1D, fan_in_fan_out): the
slices' updates become one update of rank r x slices whose B is block-diagonal, with alpha scaled alike
so alpha/r is unchanged (PEFT's rank_pattern/alpha_pattern).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tinylm.adapters.lora import LoRALinear
from tinylm.adapters.spec import LoraSpec
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.formats.common import Exported, check_replaceable
from tinylm.formats.hf import hf_architecture, interleaved_to_half

LLAMA = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
         "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}  # fmt: skip
GPT2 = {"attn.wqkv": "attn.c_attn", "attn.wo": "attn.c_proj", "mlp.w1": "mlp.c_fc", "mlp.w2": "mlp.c_proj"}
PREFIX = "base_model.model."


def peft_tensors(model: Any, spec: LoraSpec) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(PEFT-named A/B tensors, rank per module name where it differs from spec.rank)."""
    cfg = model.config
    llama = hf_architecture(cfg) == "LlamaForCausalLM"
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, m in model.named_modules():
        if not isinstance(m, LoRALinear):
            continue
        if m.merged:
            raise TinyLMError("the adapter is merged into the base; export it unmerged")
        if name == "lm_head":
            _put(tensors, "lm_head", m.lora_A["head"], m.lora_B["head"])
            continue
        i, local = name.split(".", 2)[1], name.split(".", 2)[2]
        if llama:
            for t in m.slices:
                heads = {"q": cfg.n_heads, "k": cfg.kv_heads}.get(t)
                b = m.lora_B[t] if heads is None else interleaved_to_half(m.lora_B[t], heads)
                _put(tensors, f"model.layers.{i}.{LLAMA[t]}", m.lora_A[t], b)
        else:
            theirs = f"transformer.h.{i}.{GPT2[local]}"
            a = torch.cat([m.lora_A[t] for t in m.slices])  # (slices * r, in)
            b = torch.zeros(m.out_features, a.shape[0])  # block-diagonal: each slice's B in its rows and columns
            for j, (t, (start, rows)) in enumerate(m.slices.items()):
                b[start : start + rows, j * m.rank : (j + 1) * m.rank] = m.lora_B[t]
            _put(tensors, theirs, a, b)
            if len(m.slices) > 1:
                ranks[GPT2[local]] = a.shape[0]
    return tensors, ranks


def _put(tensors: dict[str, torch.Tensor], module: str, a: torch.Tensor, b: torch.Tensor) -> None:
    tensors[f"{PREFIX}{module}.lora_A.weight"] = a.detach().float().contiguous().cpu()
    tensors[f"{PREFIX}{module}.lora_B.weight"] = b.detach().float().contiguous().cpu()


def adapter_config(model: Any, spec: LoraSpec, ranks: dict[str, int], base_name: str) -> dict[str, Any]:
    llama = hf_architecture(model.config) == "LlamaForCausalLM"
    modules: set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            if name == "lm_head":
                modules.add("lm_head")
            else:
                modules |= {LLAMA[t] for t in m.slices} if llama else {GPT2[name.split(".", 2)[2]]}
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name,
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "bias": "none",
        "target_modules": sorted(modules), "fan_in_fan_out": not llama, "inference_mode": True,
        "rank_pattern": ranks, "alpha_pattern": {k: spec.alpha * r / spec.rank for k, r in ranks.items()},
        "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
    }  # fmt: skip


def export(model: Any, tokenizer: Any, out: Path, base_name: str = "") -> Exported:
    """Write `model`'s adapter (a model with LoRA modules) as a PEFT adapter folder."""
    from tinylm.adapters import model_spec

    spec = model_spec(model)
    tensors, ranks = peft_tensors(model, spec)
    check_replaceable(out, "an adapter folder")
    with atomic_dir(out) as tmp:
        write_json(tmp / "adapter_config.json", adapter_config(model, spec, ranks, base_name))
        save_file(tensors, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
    return Exported([out], ["load it with peft.PeftModel.from_pretrained(<the base exported with --to hf>, folder)"])
