"""AdamW with weight decay on matrices only, and its state as flat tensors + JSON (never pickle)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tinylm.errors import TinyLMError
from tinylm.train.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """Decay the >= 2-D weights (matmuls, embeddings); leave norms and biases alone.
    The fused kernel where this PyTorch has one for the device, else the multi-tensor (foreach) one."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": 1e-8}
    if device.type in ("cuda", "cpu", "mps"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass  # no fused kernel for this device in this PyTorch
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors named "<param index>.<state name>", JSON-able param groups) of the optimizer's state."""
    sd = opt.state_dict()
    tensors = {
        f"{i}.{name}": v.detach().cpu().contiguous()
        for i, state in sd["state"].items()
        for name, v in state.items()
    }
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise TinyLMError(f"optimizer state does not fit this model ({e}); start a new run without --resume") from None
