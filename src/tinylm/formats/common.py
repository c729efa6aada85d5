"""Pieces every format module shares: what an import/export returns, which models a format holds,
binary files read with size checks, and streamed atomic writes with a progress bar."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tinylm.checkpoint import build_model, model_state_dict
from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_path, write_bytes
from tinylm.layout import tensor_layout
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer

PROGRESS_BYTES = 64 << 20  # show a progress bar for files larger than this


@dataclass
class Imported:
    model: Model
    tokenizer: Tokenizer | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Exported:
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def is_llama(cfg: ModelConfig) -> bool:
    return cfg.norm == "rmsnorm" and cfg.positions == "rope" and cfg.mlp == "swiglu"


def is_gpt2(cfg: ModelConfig) -> bool:
    return cfg.norm == "layernorm" and cfg.positions == "learned" and cfg.mlp == "gelu" and cfg.bias


def require(ok: bool, target: str, problem: str, fix: str) -> None:
    """One clear error for a model `target` cannot hold."""
    if not ok:
        raise TinyLMError(f"{target} cannot hold this model: {problem}; {fix}")


def require_tanh_gelu(cfg: ModelConfig, target: str) -> None:
    """llm.c and llama.cpp's gpt2 architecture compute GPT-2's tanh GELU only."""
    require(cfg.gelu == "tanh", target, "it uses the exact (erf) GELU, but this format runs GPT-2's tanh GELU",
            "use --to hf, or train with gelu='tanh'")  # fmt: skip


def numpy_state(model: Model) -> dict[str, np.ndarray]:
    """Our weights (tied head stored once) as float32 NumPy arrays; quantized layers dequantized."""
    from tinylm.quantize.linear import dequantized_state

    state = dequantized_state(model_state_dict(model), model)
    return {k: v.detach().float().cpu().numpy() for k, v in state.items()}


def build(cfg: ModelConfig, arrays: dict[str, np.ndarray | torch.Tensor], dtype: torch.dtype | None) -> Model:
    """A model holding `arrays` (our names; validated by the checkpoint loader's rules)."""
    tensors = {
        k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in arrays.items()
    }
    for k, (shape, _) in tensor_layout(cfg).items():
        if k not in tensors or tuple(tensors[k].shape) != shape:
            got = tuple(tensors[k].shape) if k in tensors else "nothing"
            raise TinyLMError(
                f"tensor {k}: the model's settings imply shape {shape}, the file has {got}; it is inconsistent"
            )
    return build_model(cfg, tensors, dtype=dtype).eval()


class BinFile:
    """A binary model file mapped read-only, with reads that name the file when it is too short."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.size = path.stat().st_size
            self.data = np.memmap(path, dtype=np.uint8, mode="r") if self.size else np.zeros(0, np.uint8)
        except OSError as e:
            raise TinyLMError(f"{path}: cannot read ({e.strerror})") from None

    def array(self, offset: int, dtype: str, count: int) -> np.ndarray:
        nbytes = count * np.dtype(dtype).itemsize
        if offset + nbytes > self.size:
            raise TinyLMError(
                f"{self.path}: truncated: needs {offset + nbytes:,} bytes, has {self.size:,}; re-export it"
            )
        return self.data[offset : offset + nbytes].view(dtype)

    def expect_size(self, expected: int, header: str) -> None:
        if self.size != expected:
            what = "truncated" if self.size < expected else "longer than its header says"
            raise TinyLMError(
                f"{self.path}: {what}: {header} implies {expected:,} bytes but the file has {self.size:,}; "
                "the file is damaged or not this format"
            )


@contextlib.contextmanager
def stream_to(path: Path, total: int, desc: str) -> Iterator[Callable[[bytes | np.ndarray], None]]:
    """Write a file atomically through `write(bytes | ndarray)`, with a MB/s bar for big files."""
    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc=desc, disable=total < PROGRESS_BYTES, file=sys.stderr
    )
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:

            def write(chunk: bytes | np.ndarray) -> None:
                data = chunk.tobytes() if isinstance(chunk, np.ndarray) else chunk
                f.write(data)
                bar.update(len(data))

            yield write
    finally:
        bar.close()


def check_positive(path: Path, fields: dict[str, int], limit: int = 1 << 24) -> None:
    """Header sizes must be positive and below a bound no real model reaches (a corrupt header is caught
    before any size arithmetic)."""
    for name, value in fields.items():
        if not 0 < value <= limit:
            raise TinyLMError(f"{path}: header field {name} = {value} is impossible; not a valid model file")


def config_problem(path: Path, build: Callable[[], ModelConfig]) -> ModelConfig:
    """Build a config from header fields, turning an inconsistent header into one line naming the file."""
    try:
        return build()
    except TinyLMError as e:
        raise TinyLMError(f"{path}: header describes no valid model ({e})") from None


def split_qkv(cfg: ModelConfig, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our fused layers.{i}.attn.wqkv.{weight,bias} as separate attn.wq/wk/wv (how most formats store it)."""
    H, KV, hs = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    out = dict(sd)
    for key in [k for k in sd if ".attn.wqkv." in k]:
        q, k, v = np.split(out.pop(key), [H * hs, (H + KV) * hs])
        for name, part in (("wq", q), ("wk", k), ("wv", v)):
            out[key.replace("wqkv", name)] = part
    return out


def join_qkv(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(sd)
    for key in [k for k in sd if ".attn.wq." in k]:
        parts = [out.pop(key.replace("wq", name)) for name in ("wq", "wk", "wv")]
        out[key.replace("wq", "wqkv")] = np.concatenate(parts)
    return out


def check_replaceable(out: Path, what: str, hf: bool = False) -> None:
    """Writers replace `out` as a whole; refuse to do that to a file or a non-empty folder that is not `what`
    (an HF model folder if `hf`, else a tinylm checkpoint), and never to a training checkpoint (its
    optimizer and RNG state would be lost)."""
    if out.is_dir() and not any(out.iterdir()):
        return
    config = _json_object(out / "config.json")
    if (out / "train_state.json").is_file():
        raise TinyLMError(f"{out} is a training checkpoint (it would lose its optimizer and RNG state); "
                          "choose a new --out")  # fmt: skip
    if out.exists() and (config is None or ("model_type" in config) != hf):
        raise TinyLMError(f"{out} exists and is not {what}; choose a new --out")


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_with_tokenizer(
    write_model: Callable[[], None],
    out: Path,
    tokenizer: bytes | None,
    default_name: str,
    tokenizer_out: Path | None,
) -> list[Path]:
    """Write the model to `out`, then its tokenizer file (`default_name` beside it unless `tokenizer_out`),
    refusing before anything is written to replace a different tokenizer file already there."""
    target = None
    if tokenizer is not None:
        target = tokenizer_out or out.with_name(default_name)
        if target.is_file() and target.read_bytes() != tokenizer:
            raise TinyLMError(
                f"{target} exists with a different vocabulary; pass --tokenizer-out to write elsewhere"
            )
    write_model()
    if target is None:
        return [out]
    write_bytes(target, tokenizer)  # type: ignore[arg-type]
    return [out, target]
