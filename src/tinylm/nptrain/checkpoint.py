"""Checkpoints of the NumPy trainer, file for file those of the torch trainer (tinylm.checkpoint and
tinylm.train.state; the file names and train_state.json's reading are tinylm.train.progress's, shared),
so either trainer resumes the other's run and either engine samples it:

  config.json, model.safetensors, tokenizer/   the model (tinylm.checkpoint's layout)
  train_state.json        TrainConfig, progress counters, AdamW's param groups, Python/NumPy RNG
  optimizer.safetensors   "<i>.exp_avg", "<i>.exp_avg_sq", "<i>.step": i as torch's AdamW numbers params
  rng.safetensors         "batches": the data order, as torch.Generator.get_state() bytes
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from tinylm.config import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, ModelConfig, read_config
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.nptrain.adamw import AdamW
from tinylm.nptrain.model import Transformer
from tinylm.train.config import TrainConfig
from tinylm.train.order import Sampler
from tinylm.train.progress import OPTIMIZER_FILE, RNG_FILE, STATE_FILE, Progress, host_rng
from tinylm.train.progress import Saved as SavedState


def load_plain(path: Path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The config and float32 weights of a checkpoint to train on (quantized or adapter checkpoints
    are the torch trainer's business)."""
    from tinylm.runtime import load_weights

    cfg, transforms = read_config(path)
    if transforms:
        raise TinyLMError(f"{path} declares {', '.join(transforms)}: the NumPy trainer trains plain models only; "
                          "use --engine torch")  # fmt: skip
    return cfg, load_weights(path)


def save(path: Path, model: Transformer, tokenizer: Any, cfg: TrainConfig, progress: Progress,
         optimizer: AdamW | None = None, sampler: Sampler | None = None, files: tuple[Path, ...] = ()) -> None:  # fmt: skip
    """Replace the checkpoint directory `path` atomically; without optimizer/sampler a weights-only
    snapshot (best/)."""
    try:
        with atomic_dir(path) as tmp:
            write_json(tmp / CONFIG_FILE, model.config.to_dict())
            save_file(model.state_dict(), tmp / WEIGHTS_FILE, metadata={"format": "pt", "writer": "tinylm"})
            if tokenizer is not None:
                from tinylm.tokenizer import save_tokenizer

                save_tokenizer(tokenizer, tmp / TOKENIZER_DIR)
            state: dict[str, Any] = {"train_config": cfg.to_dict(), "progress": dataclasses.asdict(progress)}
            if optimizer is not None and sampler is not None:
                save_file(_optimizer_tensors(model, optimizer), tmp / OPTIMIZER_FILE)
                save_file({"batches": sampler.get_state()}, tmp / RNG_FILE)
                state |= {"optimizer": {"param_groups": _param_groups(model, optimizer)}, "rng": host_rng(),
                          "grad_scaler": {}}  # fmt: skip
            write_json(tmp / STATE_FILE, state)
            for f in files:
                if f.is_file():
                    (tmp / f.name).write_bytes(f.read_bytes())
    except OSError as e:
        raise TinyLMError(f"cannot write checkpoint to {path}: {e.strerror}; choose a writable --out directory") from None


def _optimizer_tensors(model: Transformer, opt: AdamW) -> dict[str, np.ndarray]:
    tensors = {}
    for i, name in enumerate(model.names):
        p, begin = model.params[name], model.offsets[name]  # the moments are laid out as the parameters
        for key, moment in (("exp_avg", opt.m), ("exp_avg_sq", opt.v)):
            tensors[f"{i}.{key}"] = moment[begin : begin + p.size].reshape(p.shape).astype(np.float32)
        tensors[f"{i}.step"] = np.array(opt.steps, np.float32)
    return tensors


def _param_groups(model: Transformer, opt: AdamW) -> list[dict[str, Any]]:
    """torch AdamW's param_groups: the decayed matrices, then norms and biases without decay."""
    n_mats = sum(1 for n in model.names if model.params[n].ndim >= 2)
    base = {"lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "amsgrad": False, "maximize": False,
            "foreach": None, "capturable": False, "differentiable": False, "fused": None,
            "decoupled_weight_decay": True}  # fmt: skip
    return [{"weight_decay": opt.weight_decay, **base, "params": list(range(n_mats))},
            {"weight_decay": 0.0, **base, "params": list(range(n_mats, len(model.names)))}]  # fmt: skip


class Saved(SavedState):
    """A run's saved state, read back from a checkpoint directory (either trainer's, `Saved.load`)."""

    def restore(self, model: Transformer, opt: AdamW, sampler: Sampler) -> None:
        """Optimizer moments, step count and hyper-parameters, and the data position."""
        if "optimizer" not in self.raw:
            raise TinyLMError(f"{self.path}: a weights-only snapshot (no optimizer state); resume from <out>/last")
        try:
            tensors = load_file(self.path / OPTIMIZER_FILE)
            order = load_file(self.path / RNG_FILE)["batches"]
        except (SafetensorError, OSError, KeyError) as e:
            raise TinyLMError(f"{self.path}: optimizer or RNG state unreadable ({e}); start a new run") from None
        for i, name in enumerate(model.names):
            p, begin = model.params[name], model.offsets[name]
            try:
                opt.m[begin : begin + p.size] = tensors[f"{i}.exp_avg"].reshape(-1)
                opt.v[begin : begin + p.size] = tensors[f"{i}.exp_avg_sq"].reshape(-1)
            except (KeyError, ValueError) as e:
                raise TinyLMError(f"{self.path}: optimizer state does not fit this model ({e}); "
                                  "start a new run without --resume") from None  # fmt: skip
        opt.steps = int(tensors["0.step"]) if "0.step" in tensors else 0
        group = self.raw["optimizer"]["param_groups"][0]
        opt.betas, opt.eps, opt.weight_decay = tuple(group["betas"]), group["eps"], group["weight_decay"]
        sampler.set_state(order)
