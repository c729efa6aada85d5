"""Everything a run needs to continue exactly where it stopped, stored beside the weights.

In a checkpoint directory (written in the same atomic swap as the weights):
  train_state.json       TrainConfig, counters, optimizer hyper-parameters, GradScaler, Python/NumPy RNG
  optimizer.safetensors  AdamW moments and step counts, named "<param index>.<state name>"
  rng.safetensors        torch generator states as uint8 tensors: the batch sampler (the data position)
                         and each process's global CPU (and CUDA) generator, which dropout draws from
Only safetensors and JSON: nothing here is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinylm.errors import TinyLMError
from tinylm.fileio import write_json
from tinylm.train import distributed
from tinylm.train.config import TrainConfig
from tinylm.train.optim import load_optimizer_tensors, optimizer_tensors

STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


@dataclass
class Progress:
    """The counters of a run."""

    step: int = 0  # optimizer steps taken
    max_steps: int = 0  # planned length (fitted to the clock when TrainConfig.minutes is set)
    tokens: int = 0  # training tokens seen, all processes
    seconds: float = 0.0  # training wall time, all sessions
    best_val_loss: float | None = None
    bad_steps: int = 0  # NaN/inf losses in a row
    data_size: int = 0  # examples in the training set (a resumed run must see the same data)


def capture_rng(generator: torch.Generator, d: distributed.Dist, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random state of the run (collective: all processes call it)."""
    tensors = {"batches": generator.get_state()}
    comm = device if device.type == "cuda" else torch.device("cpu")  # NCCL moves only GPU tensors
    for r, s in enumerate(distributed.all_gather(d, torch.get_rng_state().to(comm))):
        tensors[f"torch_cpu.{r}"] = s.cpu()
    if device.type == "cuda":
        for r, s in enumerate(distributed.all_gather(d, torch.cuda.get_rng_state(device).to(comm))):
            tensors[f"torch_cuda.{r}"] = s.cpu()
    py = random.getstate()
    npy = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]], "numpy": [npy[0], npy[1].tolist(), *npy[2:]]}


def restore_rng(tensors: dict[str, torch.Tensor], states: dict[str, Any], generator: torch.Generator,
                d: distributed.Dist, device: torch.device) -> None:  # fmt: skip
    generator.set_state(tensors["batches"])
    if f"torch_cpu.{d.rank}" in tensors:
        torch.set_rng_state(tensors[f"torch_cpu.{d.rank}"])
    if device.type == "cuda" and f"torch_cuda.{d.rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"torch_cuda.{d.rank}"], device)
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def writer(cfg: TrainConfig, progress: Progress, optimizer: torch.optim.Optimizer | None,
           scaler: torch.amp.GradScaler | None, rng: tuple[dict[str, torch.Tensor], dict[str, Any]] | None,
           files: tuple[Path, ...] = ()):  # fmt: skip
    """An `extra` for `save_checkpoint`: the training state (without optimizer/RNG: a weights-only
    snapshot such as best/) plus copies of `files` (the metrics log and plot)."""

    def write(directory: Path) -> None:
        state: dict[str, Any] = {"train_config": cfg.to_dict(), "progress": dataclasses.asdict(progress)}
        if optimizer is not None and rng is not None:
            tensors, meta = optimizer_tensors(optimizer)
            save_file(tensors, directory / OPTIMIZER_FILE)
            save_file(rng[0], directory / RNG_FILE)
            state |= {"optimizer": meta, "rng": rng[1], "grad_scaler": scaler.state_dict() if scaler else {}}
        write_json(directory / STATE_FILE, state)
        for f in files:
            if f.is_file():
                (directory / f.name).write_bytes(f.read_bytes())

    return write


@dataclass
class Saved:
    """A run's saved state, read back from a checkpoint directory."""

    path: Path
    cfg: TrainConfig
    progress: Progress
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Saved:
        f = path / STATE_FILE
        if not f.is_file():
            raise TinyLMError(f"{path}: no {STATE_FILE}, so no run to resume here; drop --resume or check --out")
        try:
            raw = json.loads(f.read_text(encoding="utf-8"))
            return cls(path, TrainConfig.from_dict(raw["train_config"]), Progress(**raw["progress"]), raw)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise TinyLMError(f"{f}: unreadable training state ({e}); start a new run without --resume") from None

    def restore(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, generator: torch.Generator,
                d: distributed.Dist, device: torch.device) -> None:  # fmt: skip
        if "optimizer" not in self.raw:
            raise TinyLMError(f"{self.path}: a weights-only snapshot (no optimizer state); resume from <out>/last")
        try:
            opt_tensors = load_file(self.path / OPTIMIZER_FILE)
            rng_tensors = load_file(self.path / RNG_FILE)
        except (SafetensorError, OSError) as e:
            raise TinyLMError(f"{self.path}: optimizer or RNG state unreadable ({e}); start a new run") from None
        load_optimizer_tensors(optimizer, opt_tensors, self.raw["optimizer"])
        if self.raw.get("grad_scaler"):
            scaler.load_state_dict(self.raw["grad_scaler"])
        restore_rng(rng_tensors, self.raw["rng"], generator, d, device)
