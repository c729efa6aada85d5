"""Everything a run needs to continue exactly where it stopped, stored beside the weights: the torch
parts over the torch-free tinylm.train.progress (file names, counters, reading train_state.json).

In a checkpoint directory (written in the same atomic swap as the weights):
  train_state.json       TrainConfig, counters, optimizer hyper-parameters, GradScaler, Python/NumPy RNG
  optimizer.safetensors  AdamW moments and step counts, named "<param index>.<state name>"
  rng.safetensors        generator states as uint8 tensors: the batch sampler's (the data position, in
                         torch.Generator's format: tinylm.train.order)
                         and each process's global CPU (and CUDA) generator, which dropout draws from
Only safetensors and JSON: nothing here is ever unpickled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinylm.errors import TinyLMError
from tinylm.fileio import write_json
from tinylm.train import distributed
from tinylm.train.config import TrainConfig
from tinylm.train.optim import load_optimizer_tensors, optimizer_tensors
from tinylm.train.order import Sampler
from tinylm.train.progress import OPTIMIZER_FILE, RNG_FILE, STATE_FILE, Progress, host_rng, restore_host_rng
from tinylm.train.progress import Saved as SavedState

if TYPE_CHECKING:
    from tinylm.train.batches import Batches


def capture_rng(sampler: Sampler | Batches, d: distributed.Dist, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random state of the run (collective: all processes call it)."""
    tensors = {"batches": torch.from_numpy(sampler.get_state())}
    comm = device if device.type == "cuda" else torch.device("cpu")  # NCCL moves only GPU tensors
    for r, s in enumerate(distributed.all_gather(d, torch.get_rng_state().to(comm))):
        tensors[f"torch_cpu.{r}"] = s.cpu()
    if device.type == "cuda":
        for r, s in enumerate(distributed.all_gather(d, torch.cuda.get_rng_state(device).to(comm))):
            tensors[f"torch_cuda.{r}"] = s.cpu()
    return tensors, host_rng()


def restore_rng(tensors: dict[str, torch.Tensor], states: dict[str, Any], sampler: Sampler,
                d: distributed.Dist, device: torch.device) -> None:  # fmt: skip
    sampler.set_state(tensors["batches"].numpy())
    if f"torch_cpu.{d.rank}" in tensors:
        torch.set_rng_state(tensors[f"torch_cpu.{d.rank}"])
    if device.type == "cuda" and f"torch_cuda.{d.rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"torch_cuda.{d.rank}"], device)
    restore_host_rng(states)


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


class Saved(SavedState):
    """A run's saved state, read back from a checkpoint directory (`Saved.load`), restored into torch."""

    def restore(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, sampler: Sampler,
                d: distributed.Dist, device: torch.device) -> None:  # fmt: skip
        if "optimizer" not in self.raw:
            raise TinyLMError(f"{self.path}: a weights-only snapshot (no optimizer state); resume from <out>/last")
        try:
            opt_tensors = load_file(self.path / OPTIMIZER_FILE)
            rng_tensors = load_file(self.path / RNG_FILE)
        except (SafetensorError, OSError) as e:
            raise TinyLMError(f"{self.path}: optimizer or RNG state unreadable ({e}); start a new run") from None
        check_optimizer(optimizer, opt_tensors, self.raw["optimizer"], self.path / OPTIMIZER_FILE)
        load_optimizer_tensors(optimizer, opt_tensors, self.raw["optimizer"])
        try:
            if self.raw.get("grad_scaler"):
                scaler.load_state_dict(self.raw["grad_scaler"])
            restore_rng(rng_tensors, self.raw["rng"], sampler, d, device)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise TinyLMError(f"{self.path}: damaged RNG or grad-scaler state ({str(e)[:120]}); "
                              "restore the checkpoint or start a new run") from None  # fmt: skip


def check_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: Any, where: Path) -> None:
    """A saved AdamW state must fit this model exactly: torch checks only the counts, so a state from
    another run loads and turns the run to NaN (which then replaces its good checkpoint)."""
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                               for g in groups):  # fmt: skip
        raise TinyLMError(f"{where}: optimizer state without valid param_groups; restore it or start a new run")
    for g, mine in zip(groups, opt.param_groups, strict=False):  # (torch checks the counts)
        wrong = sorted(k for k, v in g.items() if k != "params" and k in mine and None not in (v, mine[k])
                       and _kind(v) != _kind(mine[k]))  # (null: unset, as another trainer may write it)
        if wrong:
            raise TinyLMError(f"{where}: optimizer setting(s) {', '.join(wrong)} of the wrong type; "
                              "restore it or start a new run")  # fmt: skip
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, t in tensors.items():
        i, _, name = key.partition(".")
        if not i.isdigit() or int(i) >= len(params):
            raise TinyLMError(f"{where}: optimizer tensor {key} belongs to no parameter of this model; "
                              "it comes from another model or run")  # fmt: skip
        want = () if name == "step" else tuple(params[int(i)].shape)
        if tuple(t.shape) != want or not t.dtype.is_floating_point:
            raise TinyLMError(f"{where}: optimizer tensor {key} is {tuple(t.shape)} {t.dtype}, this model needs "
                              f"{want} float; it comes from another model or run")  # fmt: skip
        if not torch.isfinite(t).all():
            raise TinyLMError(f"{where}: optimizer tensor {key} holds NaN/inf; resume from an earlier checkpoint")


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float | torch.Tensor):
        return "number"
    return "sequence" if isinstance(v, list | tuple) else type(v).__name__


def finite(model: torch.nn.Module) -> bool:
    """No NaN/inf in any weight: what a checkpoint must satisfy before it may replace a good one."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
