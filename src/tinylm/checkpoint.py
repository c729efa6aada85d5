"""Checkpoints: a directory with `config.json` (the ModelConfig) and `model.safetensors`.

Optional members: `tokenizer/` (a saved tokenizer) and whatever a writer adds through `extra`
(training state, metrics, plots). The whole directory is replaced atomically on every save, and
every way a checkpoint can be wrong is reported as one line naming the file and the problem.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from tinylm.config import CONFIG_FILE, ModelConfig, load_config
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class Checkpoint:
    model: Model
    tokenizer: Tokenizer | None
    path: Path

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def model_state_dict(model: Model) -> dict[str, torch.Tensor]:
    """The weights as saved: a tied output head is stored once (as tok_emb.weight)."""
    sd = model.state_dict()
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight")
    return {k: v.detach().contiguous() for k, v in sd.items()}


@contextlib.contextmanager
def _shapes_only() -> Iterator[None]:
    """Build modules on "meta" without running their random init: torch's meta kernels for
    uniform_/normal_ import its compiler stack (~1-2 s) to produce values nobody reads."""
    names = ("uniform_", "normal_", "kaiming_uniform_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda t, *a, **k: t)
        with torch.device("meta"):
            yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def meta_model(cfg: ModelConfig) -> Model:
    """The model's structure with no memory behind it (no init, no buffers): shapes to check or load into."""
    with _shapes_only():
        return Model(cfg)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model_state_dict(meta_model(cfg)).items()}


def save_checkpoint(
    path: str | Path,
    model: Model,
    tokenizer: Tokenizer | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write model (+ tokenizer, + whatever `extra(tmpdir)` writes) to `path`, replacing it atomically."""
    path = Path(path)
    with atomic_dir(path) as tmp:  # an OS error (read-only, no space) comes out as one line naming `path`
        write_json(tmp / CONFIG_FILE, model.config.to_dict())
        save_file({k: v.cpu() for k, v in model_state_dict(model).items()}, tmp / WEIGHTS_FILE,
                  metadata={"format": "pt", "writer": "tinylm"})  # fmt: skip
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp / TOKENIZER_DIR)
        if extra is not None:
            extra(tmp)
    return path


def load_weights(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Read and validate the safetensors file against what `cfg` needs."""
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise TinyLMError(f"{wpath}: missing; the checkpoint has no weights")
    try:
        with safe_open(wpath, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLMError(f"{wpath}: truncated or corrupt safetensors file ({e}); restore it or re-save") from None
    want = expected_shapes(cfg)
    missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing:
        raise TinyLMError(f"{wpath}: missing tensor(s) {_few(missing)}; weights and {CONFIG_FILE} disagree")
    if extra:
        raise TinyLMError(f"{wpath}: unexpected tensor(s) {_few(extra)}; weights and {CONFIG_FILE} disagree")
    for k, shape in want.items():
        if tuple(tensors[k].shape) != shape:
            raise TinyLMError(
                f"{wpath}: tensor {k} has shape {tuple(tensors[k].shape)} but {CONFIG_FILE} implies {shape}"
            )
        if tensors[k].dtype not in FLOAT_DTYPES:
            raise TinyLMError(f"{wpath}: tensor {k} has dtype {tensors[k].dtype}; expected float32, bfloat16 or float16")
        if not torch.isfinite(tensors[k]).all():
            raise TinyLMError(f"{wpath}: tensor {k} holds NaN/inf values; the weights are damaged (use an earlier checkpoint)")
    return tensors


def build_model(cfg: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> Model:  # fmt: skip
    """A model holding exactly `tensors` (validated names and shapes), without a wasted random init."""
    model = meta_model(cfg)
    sd = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in tensors.items()}
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    model.init_buffers(device)
    return model


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Checkpoint:
    path = Path(path)
    cfg = load_config(path)
    model = build_model(cfg, load_weights(path, cfg), device=device, dtype=dtype)
    tokenizer = load_tokenizer(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise TinyLMError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}; "
            "they do not belong together"
        )
    return Checkpoint(model=model.eval(), tokenizer=tokenizer, path=path)


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
