"""Adapters on a frozen base model: LoRA modules, merging, adapter-only checkpoints and PEFT export.

Registers the "lora" kind of the config.json section "adapters" (tinylm.transforms): a checkpoint that
declares it loads as its base with LoRA modules on the targeted Linears. Torch-free at import: the
modules (tinylm.adapters.lora) load when a model is transformed.
"""

from __future__ import annotations

from typing import Any

from tinylm import transforms
from tinylm.adapters.spec import LoraSpec, adapter_layout
from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.layout import Layout

SECTION = "adapters"


def _layout(cfg: ModelConfig, spec: dict[str, Any], layout: Layout) -> Layout:
    return {**layout, **adapter_layout(cfg, LoraSpec.from_dict(spec))}


def _apply(model: Any, spec: dict[str, Any]) -> None:
    from tinylm.adapters.lora import apply_lora

    apply_lora(model, LoraSpec.from_dict(spec))


def model_spec(model: Any) -> LoraSpec:
    """The LoRA settings `model` was adapted with (one line if it has no adapter)."""
    spec = transforms.applied(model).get(SECTION)
    if spec is None:
        raise TinyLMError("this model has no adapter; give an adapter checkpoint (from `tinylm finetune --method lora`)")
    return LoraSpec.from_dict(spec)


transforms.register(SECTION, "lora", layout=_layout, apply=_apply)
