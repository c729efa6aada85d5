"""Model configuration: one dataclass whose options cover GPT-2 and Llama 2, plus named presets."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tinylm.errors import TinyLMError
from tinylm.fields import from_json
from tinylm.fileio import pending_dir, recover_dir

CONFIG_FILE = "config.json"  # a checkpoint's model settings
WEIGHTS_FILE = "model.safetensors"  # ... its weights
TOKENIZER_DIR = "tokenizer"  # ... and its tokenizer
# optional objects in config.json beside the model fields, in the order they apply (see tinylm.transforms)
TRANSFORM_SECTIONS = ("quantization", "adapters")


@dataclass(frozen=True)
class ModelConfig:
    # sizes
    vocab_size: int = 512
    context_length: int = 256  # longest sequence the model attends over (block_size / max_seq_len)
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (MHA); fewer: grouped-query; 1: multi-query
    dim: int = 128
    hidden_dim: int | None = None  # MLP width; None: 4*dim for GELU, Llama's rule for SwiGLU
    multiple_of: int = 32  # SwiGLU width rounds up to this (llama2.c's rule)
    # architecture options
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    positions: Literal["learned", "rope"] = "learned"
    rope_theta: float = 10000.0
    mlp: Literal["gelu", "swiglu"] = "gelu"
    # GELU form: GPT-2's tanh approximation (HF gelu_new, llm.c, GGUF) or the exact erf one (nanoGPT)
    gelu: Literal["tanh", "exact"] = "tanh"
    bias: bool = True  # biases in linear layers and LayerNorm
    tie_embeddings: bool = True
    dropout: float = 0.0
    # free-form label: "gpt2", "llama" or "custom"; it names the family but changes nothing
    family: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "context_length", "n_layers", "n_heads", "dim", "multiple_of", "n_kv_heads",
                     "hidden_dim", "norm_eps", "rope_theta"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if problems:  # the checks below divide by these
            raise TinyLMError("invalid model config: " + "; ".join(problems))
        if self.dim % self.n_heads:
            problems.append(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        if self.positions == "rope" and self.head_dim % 2:
            problems.append(f"RoPE needs an even head size, got {self.head_dim}")
        if self.norm not in ("layernorm", "rmsnorm"):
            problems.append(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.positions not in ("learned", "rope"):
            problems.append(f"positions must be 'learned' or 'rope', got {self.positions!r}")
        if self.mlp not in ("gelu", "swiglu"):
            problems.append(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.gelu not in ("tanh", "exact"):
            problems.append(f"gelu must be 'tanh' or 'exact', got {self.gelu!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise TinyLMError("invalid model config: " + "; ".join(problems))

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.mlp == "gelu":
            return 4 * self.dim
        hidden = int(2 * (4 * self.dim) / 3)  # SwiGLU has 3 matrices: keep the 2-matrix 4x parameter count
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> ModelConfig:
        try:
            return from_json(cls, d, source, what="config field")
        except TinyLMError as e:
            raise TinyLMError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count from the shapes alone (no model needs to be built)."""
        C, F, L = self.dim, self.ffn_dim, self.n_layers
        kv = self.kv_heads * self.head_dim
        norm = C * (2 if self.norm == "layernorm" and self.bias else 1)
        attn = C * (C + 2 * kv) + C * C + ((C + 2 * kv) + C if self.bias else 0)
        n_mats = 3 if self.mlp == "swiglu" else 2
        mlp = n_mats * C * F + ((n_mats - 1) * F + C if self.bias else 0)
        n = L * (attn + mlp + 2 * norm) + norm
        if include_embeddings:
            n += self.vocab_size * C * (1 if self.tie_embeddings else 2)
            if self.positions == "learned":
                n += self.context_length * C
        elif not self.tie_embeddings:
            n += self.vocab_size * C  # the output head is compute, not a lookup
        return n


def _gpt2(n_layers: int, n_heads: int, dim: int, vocab_size: int = 50257, context_length: int = 1024) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size, context_length=context_length, n_layers=n_layers, n_heads=n_heads, dim=dim,
        norm="layernorm", positions="learned", mlp="gelu", bias=True, tie_embeddings=True, family="gpt2",
    )  # fmt: skip


def _llama(dim: int, n_layers: int, n_heads: int, n_kv_heads: int, vocab_size: int, context_length: int,
           multiple_of: int = 32) -> ModelConfig:  # fmt: skip
    return ModelConfig(
        vocab_size=vocab_size, context_length=context_length, n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=n_kv_heads, dim=dim, multiple_of=multiple_of, norm="rmsnorm", norm_eps=1e-5,
        positions="rope", rope_theta=10000.0, mlp="swiglu", bias=False, tie_embeddings=True, family="llama",
    )  # fmt: skip


PRESETS: dict[str, ModelConfig] = {
    # llama2.c's TinyStories models (shared input/output embedding, as llama2.c trains them)
    "stories260K": _llama(64, 5, 8, 4, vocab_size=512, context_length=512, multiple_of=4),
    "stories15M": _llama(288, 6, 6, 6, vocab_size=32000, context_length=256),
    "stories42M": _llama(512, 8, 8, 8, vocab_size=32000, context_length=1024),
    "stories110M": _llama(768, 12, 12, 12, vocab_size=32000, context_length=1024),
    # OpenAI's GPT-2 family
    "gpt2": _gpt2(12, 12, 768),
    "gpt2-medium": _gpt2(24, 16, 1024),
    "gpt2-large": _gpt2(36, 20, 1280),
    "gpt2-xl": _gpt2(48, 25, 1600),
    # minGPT's small ones (vocabulary and context come from the data when training)
    "gpt-nano": _gpt2(3, 3, 48),
    "gpt-micro": _gpt2(4, 4, 128),
    "gpt-mini": _gpt2(6, 6, 192),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise TinyLMError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (see `tinylm models`)") from None


def load_config(path: str | Path) -> ModelConfig:
    """The ModelConfig of the checkpoint directory `path` (torch-free, so the NumPy runtime shares it)."""
    return read_config(path)[0]


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, dict[str, Any]]]:
    """The ModelConfig of the checkpoint directory `path` and the transforms its config.json declares
    (section -> spec; see tinylm.transforms); an object under any other name is an unknown section."""
    path = Path(path)
    if not path.is_dir():
        recover_dir(path)  # a save interrupted by a crash may have left it beside under another name
    if not path.is_dir():
        raise TinyLMError(f"{path}: no checkpoint directory here; check the path")
    if pending_dir(path) is not None:  # readers leave the swap to the run's next save (its writer may be live)
        print(f"note: {path}: an interrupted save left a newer complete checkpoint in {pending_dir(path)}; "
              "the next save or `tinylm train --resume` puts it in place", file=sys.stderr)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise TinyLMError(f"{cfg_path}: missing; a checkpoint needs {CONFIG_FILE} beside model.safetensors")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{cfg_path}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(raw, dict):
        raise TinyLMError(f"{cfg_path}: expected a JSON object of model settings")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(k for k, v in raw.items() if isinstance(v, dict) and k not in fields | set(TRANSFORM_SECTIONS))
    if unknown:
        raise TinyLMError(f"{cfg_path}: unknown section {unknown[0]!r}; this tinylm knows "
                          f"{', '.join(TRANSFORM_SECTIONS)} (was it written by a newer tinylm?)")  # fmt: skip
    transforms = {s: raw.pop(s) for s in TRANSFORM_SECTIONS if s in raw}
    return ModelConfig.from_dict(raw, source=str(cfg_path)), transforms
