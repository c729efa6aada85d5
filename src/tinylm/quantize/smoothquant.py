"""SmoothQuant (Xiao et al., 2022): a few input channels of a transformer's Linear layers carry
values far larger than the rest (outliers), so one int8 scale per token spends its range on them.
Dividing channel j of the activations by s_j and multiplying column j of the weights by s_j leaves
X W^T unchanged and moves the difficulty from the activations into the weights:

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)        (alpha = 0.5 splits it evenly)

The division is folded into the norm that produces X (its weight, and bias for LayerNorm), so
smoothing costs nothing at run time. Only layers fed by a norm can be smoothed: attention's fused
wqkv (after attn_norm) and the MLP's w1 (and w3 for SwiGLU) after mlp_norm; wo and w2 run W8A8
unsmoothed, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tinylm.errors import TinyLMError

ALPHA = 0.5
SEARCH = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # `--alpha auto` tries these
FLOOR = 1e-5  # keeps the scales finite where a channel never fires or a weight column is zero


def smoothed_groups(model: nn.Module) -> Iterator[tuple[nn.Module, dict[str, nn.Linear]]]:
    """(norm, {name: the Linear layers it feeds}) for each norm whose output only Linear layers read."""
    for i, block in enumerate(model.layers):
        yield block.attn_norm, {f"layers.{i}.attn.wqkv": block.attn.wqkv}
        mlp = {f"layers.{i}.mlp.w1": block.mlp.w1}
        if block.mlp.w3 is not None:
            mlp[f"layers.{i}.mlp.w3"] = block.mlp.w3
        yield block.mlp_norm, mlp


def check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise TinyLMError(f"--alpha {alpha} is outside [0, 1]; give a value in [0, 1] (0.5 is the usual) or auto")
    return alpha


def scales(absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s (in,) from the activations' max |x| per channel (in,) and the weights (out, in) that read them."""
    wmax = torch.stack([w.detach().abs().amax(dim=0) for w in weights]).amax(dim=0)
    return absmax.clamp(min=FLOOR).pow(alpha) / wmax.clamp(min=FLOOR).pow(1 - alpha)


@torch.no_grad()
def fold(norm: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """Divide the norm's output channels by s and multiply the matching weight columns by s."""
    norm.weight.div_(s)
    if getattr(norm, "bias", None) is not None:
        norm.bias.div_(s)
    for lin in linears:
        lin.weight.mul_(s)  # (out, in) * (in,): column j times s_j


def smooth(model: nn.Module, absmax: dict[str, torch.Tensor], alpha: float) -> None:
    """Fold SmoothQuant's scales into `model` in place; `absmax`: max |input| per channel of each
    smoothed layer, as recorded on the calibration set (calibrate.recording)."""
    check_alpha(alpha)
    for norm, linears in smoothed_groups(model):
        first = next(iter(linears))
        fold(norm, list(linears.values()), scales(absmax[first], [m.weight for m in linears.values()], alpha))


@torch.no_grad()
def plant_outliers(model: nn.Module, channels: list[int], factor: float = 30.0) -> None:
    """Give `model` activation outliers without changing its function (for demonstrations and tests):
    every smoothed norm's output channels `channels` times `factor`, the weight columns that read them
    divided by it -- what trained LLMs grow on their own, which SmoothQuant undoes."""
    s = torch.ones(model.config.dim)
    s[channels] = 1.0 / factor
    for norm, linears in smoothed_groups(model):
        fold(norm, list(linears.values()), s)
