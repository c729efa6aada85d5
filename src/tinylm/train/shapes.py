"""Model shapes from command-line choices: a preset, or a family (GPT-2 / Llama 2) with custom sizes."""

from __future__ import annotations

from typing import Any

from tinylm.config import ModelConfig, get_preset
from tinylm.errors import TinyLMError

# a family's architecture options come from one of its presets; the sizes are replaced
FAMILY_BASE = {"llama": "stories260K", "gpt2": "gpt-micro"}
DEFAULT_SHAPE = {"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 256}


def build_config(vocab_size: int, preset: str | None = None, family: str | None = None, **sizes: Any) -> ModelConfig:
    """`preset` (sizes from it) or `family` (default llama) with `sizes`: n_layers, dim, n_heads,
    n_kv_heads, context_length, hidden_dim, dropout. The vocabulary always comes from the tokenizer."""
    sizes = {k: v for k, v in sizes.items() if v is not None}
    if preset is not None:
        if family is not None:
            raise TinyLMError("give --preset or --family, not both (a preset fixes the family)")
        base = get_preset(preset)
    else:
        family = family or DEFAULT_SHAPE["family"]
        if family not in FAMILY_BASE:
            raise TinyLMError(f"unknown family {family!r}; choose {' or '.join(FAMILY_BASE)}")
        sizes = {**{k: v for k, v in DEFAULT_SHAPE.items() if k != "family"}, **sizes}
        base = get_preset(FAMILY_BASE[family]).replace(multiple_of=32)
        sizes.setdefault("n_kv_heads", None)  # MHA unless asked for fewer kv heads
    return base.replace(vocab_size=vocab_size, **sizes)


def describe(cfg: ModelConfig) -> str:
    return (f"{cfg.family} {cfg.n_layers} layers x dim {cfg.dim}, {cfg.n_heads} heads"
            f"{f' ({cfg.kv_heads} kv)' if cfg.kv_heads != cfg.n_heads else ''}, context {cfg.context_length}, "
            f"vocab {cfg.vocab_size:,}")  # fmt: skip
