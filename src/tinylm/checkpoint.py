"""Checkpoints: a directory with `config.json` (the ModelConfig, plus any declared transforms) and
`model.safetensors`.

Optional members: `tokenizer/` (a saved tokenizer), `base.json` (a trainable-only checkpoint: its
weights file holds only the tensors that were trained, and base.json names the checkpoint that holds
the rest, with a hash of its weights) and whatever a writer adds through `extra` (training state,
metrics, plots). The whole directory is replaced atomically on every save, and every way a checkpoint
can be wrong is reported as one line naming the file and the problem.

Loading builds the empty model on "meta", applies the transforms config.json declares
(`tinylm.transforms`: quantization, adapters), then loads the tensors and validates their names, shapes
and dtypes against the transformed layout (`tinylm.layout`). Saving writes the transforms the model
records, so a saved checkpoint always loads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from tinylm import transforms as tf
from tinylm.config import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, ModelConfig, read_config
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.layout import FLOAT, check_tensors
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

BASE_FILE = "base.json"


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
    if model.config.tie_embeddings and "lm_head.weight" in sd:
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


def meta_model(cfg: ModelConfig, transforms: tf.Transforms | None = None) -> Model:
    """The model's structure with no memory behind it (no init, no buffers), with `transforms` applied:
    shapes to check or load into."""
    with _shapes_only():
        model = Model(cfg)
        tf.apply_all(model, transforms or {})
    return model


def save_checkpoint(
    path: str | Path,
    model: Model,
    tokenizer: Tokenizer | None = None,
    extra: Callable[[Path], None] | None = None,
    *,
    base: str | Path | None = None,
) -> Path:
    """Write model (+ tokenizer, + whatever `extra(tmpdir)` writes) to `path`, replacing it atomically.
    With `base` (a checkpoint holding the model's other weights), only the tensors of parameters that
    require grad are written, plus base.json pointing at `base`."""
    path = Path(path)
    tensors = model_state_dict(model)
    if base is not None:
        trainable = trainable_names(model)
        tensors = {k: v for k, v in tensors.items() if k in trainable}
    with atomic_dir(path) as tmp:  # an OS error (read-only, no space) comes out as one line naming `path`
        write_json(tmp / CONFIG_FILE, model.config.to_dict() | tf.applied(model))
        save_file({k: v.cpu() for k, v in tensors.items()}, tmp / WEIGHTS_FILE,
                  metadata={"format": "pt", "writer": "tinylm"})  # fmt: skip
        if base is not None:
            write_json(tmp / BASE_FILE, {"path": _relative(Path(base), path), "sha256": weights_hash(Path(base))})
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp / TOKENIZER_DIR)
        if extra is not None:
            extra(tmp)
    return path


def trainable_names(model: Model) -> set[str]:
    """State-dict names of the parameters that require grad (what a trainable-only checkpoint holds)."""
    return {k for k, p in model.named_parameters() if p.requires_grad}


def weights_hash(path: Path) -> str:
    """SHA-256 of a checkpoint's weights file: a trainable-only checkpoint refuses any other base."""
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise TinyLMError(f"{wpath}: missing; the base checkpoint has no weights")
    st = wpath.stat()
    return _file_hash(str(wpath.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _file_hash(path: str, inode: int, mtime_ns: int, size: int) -> str:
    """Cached while the file is unchanged (same inode, time and size): a fine-tuning run saves against its
    base at every evaluation."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _relative(base: Path, ckpt: Path) -> str:
    """base as seen from ckpt (so the two can move together), or absolute where no relative path exists."""
    try:
        return os.path.relpath(base.resolve(), ckpt.resolve())
    except ValueError:  # another drive (Windows)
        return str(base.resolve())


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of path/model.safetensors, unvalidated."""
    wpath = path / WEIGHTS_FILE
    if not wpath.is_file():
        raise TinyLMError(f"{wpath}: missing; the checkpoint has no weights")
    try:
        with safe_open(wpath, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLMError(f"{wpath}: truncated or corrupt safetensors file ({e}); restore it or re-save") from None


def base_tensors(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The tensors a trainable-only checkpoint takes from its base (none for a whole checkpoint)."""
    if not (path / BASE_FILE).is_file():
        return {}
    ref = _read_base_ref(path / BASE_FILE)
    base = path / ref["path"]
    if read_config(base)[0] != cfg:
        raise TinyLMError(f"{path / BASE_FILE}: the base {base} is a model of another shape; point it at the right one")
    if weights_hash(base) != ref["sha256"]:
        raise TinyLMError(f"{path / BASE_FILE}: the weights of the base {base} changed since this checkpoint was "
                          "trained on them (hash differs); restore that base")  # fmt: skip
    return read_tensors(base)


def _read_base_ref(f: Path) -> dict[str, str]:
    try:
        ref = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(ref.get("path"), str) and isinstance(ref.get("sha256"), str):
            return ref
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    raise TinyLMError(f'{f}: expected {{"path": ..., "sha256": ...}} naming the base checkpoint; the file is corrupt')


def load_weights(path: Path, cfg: ModelConfig, transforms: tf.Transforms | None = None) -> dict[str, torch.Tensor]:
    """Read the checkpoint's tensors (on top of its base's, for a trainable-only one) and validate them
    against what `cfg` with `transforms` needs."""
    tensors = base_tensors(path, cfg)
    own = read_tensors(path)
    tensors.update(own)
    layout = tf.transformed_layout(cfg, transforms or {}, str(path / CONFIG_FILE))
    found = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    check_tensors(layout, found, str(path / WEIGHTS_FILE), CONFIG_FILE)
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise TinyLMError(f"{path / WEIGHTS_FILE}: tensor {bad} holds NaN/inf values; the weights are damaged "
                          "(use an earlier checkpoint)")  # fmt: skip
    return tensors


def build_model(cfg: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, transforms: tf.Transforms | None = None) -> Model:  # fmt: skip
    """A model holding exactly `tensors` (validated names and shapes), without a wasted random init.
    `dtype` converts the plain float weights; a transform's tensors (int8 weights, scales) keep theirs."""
    model = meta_model(cfg, transforms)
    layout = tf.transformed_layout(cfg, transforms or {})
    plain = {k for k, (_, kind) in layout.items() if kind == FLOAT}
    sd = {k: v.to(device=device, dtype=dtype if dtype and k in plain else v.dtype) for k, v in tensors.items()}
    tied = cfg.tie_embeddings and "lm_head.weight" in model.state_dict()
    if tied:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if tied:
        model.tie_weights()
    model.init_buffers(device)
    return model


def load_into(model: Model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy validated checkpoint tensors into an existing model of the same structure (a tied head
    is stored once, as tok_emb.weight)."""
    sd = dict(tensors)
    if model.config.tie_embeddings and "lm_head.weight" in model.state_dict():
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    model.load_state_dict(sd)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Checkpoint:
    path = Path(path)
    cfg, transforms = read_config(path)
    model = build_model(cfg, load_weights(path, cfg, transforms), device=device, dtype=dtype, transforms=transforms)
    tokenizer = load_tokenizer(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise TinyLMError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}; "
            "they do not belong together"
        )
    return Checkpoint(model=model.eval(), tokenizer=tokenizer, path=path)
