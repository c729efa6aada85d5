"""What a LoRA adapter is, torch-free: its settings (the config.json "adapters" section) and where its
low-rank updates sit in the model.

A target names one projection; several can share one Linear: the fused `attn.wqkv` (rows [q | k | v])
carries a separate update per slice, so "q,v" adapts exactly the q and v rows.

    q, k, v   slices of layers.*.attn.wqkv       o     layers.*.attn.wo
    gate      layers.*.mlp.w1 (SwiGLU only)      up    layers.*.mlp.w3 (SwiGLU) or mlp.w1 (GPT-2's fc)
    down      layers.*.mlp.w2                    head  lm_head (an untied output head only)

GPT-2's MLP is up (fc, dim -> 4 dim) then down (proj): it has no gate. A tied head is the token embedding
itself; an update merged into it would change the input embedding as well, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError

TARGETS = ("q", "k", "v", "o", "gate", "up", "down", "head")
PRESETS = {"attn": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down"), "all": TARGETS}


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise TinyLMError(f"LoRA rank must be positive, got {self.rank}")
        if self.alpha <= 0:
            raise TinyLMError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise TinyLMError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise TinyLMError(f"unknown LoRA target(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(TARGETS)} or the presets {', '.join(PRESETS)}")  # fmt: skip

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lora", "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraSpec:
        known = {"kind", "rank", "alpha", "dropout", "targets"}
        if set(d) - known:
            raise TinyLMError(f"adapters section: unknown field(s) {', '.join(sorted(set(d) - known))}")
        try:
            return cls(rank=int(d.get("rank", 8)), alpha=float(d.get("alpha", 16.0)), dropout=float(d.get("dropout", 0.0)),
                       targets=tuple(d.get("targets", cls.targets)))  # fmt: skip
        except (TypeError, ValueError) as e:
            raise TinyLMError(f"adapters section: {e}") from None


def parse_targets(text: str, cfg: ModelConfig) -> tuple[str, ...]:
    """`--targets` ("q,v", "attn", "mlp,head", "all") -> target names that exist in `cfg`'s model.
    A preset drops what the architecture lacks (GPT-2 has no gate, a tied head is skipped); a target
    named explicitly that cannot be adapted is an error."""
    out: list[str] = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word in PRESETS:
            out += [t for t in PRESETS[word] if _why_not(t, cfg) is None]
        elif word in TARGETS:
            if (why := _why_not(word, cfg)) is not None:
                raise TinyLMError(f"--targets {word}: {why}")
            out.append(word)
        else:
            raise TinyLMError(f"unknown --targets entry {word!r}; use {', '.join(TARGETS)} or {', '.join(PRESETS)}")
    if not out:
        raise TinyLMError(f"--targets {text!r} selects no layer of this model")
    return tuple(dict.fromkeys(out))


def _why_not(target: str, cfg: ModelConfig) -> str | None:
    if target == "gate" and cfg.mlp != "swiglu":
        return "this model's MLP (GELU: fc = up, proj = down) has no gate; use up,down"
    if target == "head" and cfg.tie_embeddings:
        return ("the output head shares the token embedding (tie_embeddings), so an update to it could not be "
                "merged without changing the input embedding too; leave out head")  # fmt: skip
    return None


def placements(cfg: ModelConfig, spec: LoraSpec) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Module name -> {target: (first output row, rows, input features)} of every low-rank update."""
    H, KV, hs, C, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.dim, cfg.ffn_dim
    up = "mlp.w3" if cfg.mlp == "swiglu" else "mlp.w1"
    where = {"q": ("attn.wqkv", 0, H * hs, C), "k": ("attn.wqkv", H * hs, KV * hs, C),
             "v": ("attn.wqkv", (H + KV) * hs, KV * hs, C), "o": ("attn.wo", 0, C, C),
             "gate": ("mlp.w1", 0, F, C), "up": (up, 0, F, C), "down": ("mlp.w2", 0, C, F)}  # fmt: skip
    out: dict[str, dict[str, tuple[int, int, int]]] = {}
    for t in spec.targets:
        if (why := _why_not(t, cfg)) is not None:
            raise TinyLMError(f"adapter target {t!r} does not fit this base: {why}")
        if t == "head":
            out.setdefault("lm_head", {})[t] = (0, cfg.vocab_size, C)
            continue
        module, start, rows, n_in = where[t]
        for i in range(cfg.n_layers):
            out.setdefault(f"layers.{i}.{module}", {})[t] = (start, rows, n_in)
    return out


def adapter_layout(cfg: ModelConfig, spec: LoraSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """The adapter's own tensors: A (rank, in) and B (rows, rank) per update, stored in float."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for module, slices in placements(cfg, spec).items():
        for t, (_, rows, n_in) in slices.items():
            out[f"{module}.lora_A.{t}"] = ((spec.rank, n_in), "float")
            out[f"{module}.lora_B.{t}"] = ((rows, spec.rank), "float")
    return out
