"""The calibrated schemes of `tinylm quantize`, run on a float model in place:

  gptq-int4, gptq-q4_0  GPTQ (gptq.py) to the int4 / q4_0 grids; stored as those schemes store them
  smoothquant           SmoothQuant (smoothquant.py), then W8A8 (w8a8_linear.py)
  w8a8                  W8A8 without smoothing (to see what smoothing buys)

GPTQ runs block by block: each transformer block's Linear layers get their Hessians from one pass
of that block over the calibration sequences, *as the already-quantized blocks before it produce
them*, are quantized, and the quantized block's outputs feed the next block (the GPTQ paper's
sequential order; within a block all layers see the float block's inputs). The output head, if not
kept, is quantized last from the final norm's outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tinylm.quantize import calibrate, gptq, schemes, smoothquant, w8a8
from tinylm.quantize.calibrate import BATCH, linear_layers, recording

GPTQ = {"gptq-int4": "int4", "gptq-q4_0": "q4_0"}
CALIBRATED = (*GPTQ, "smoothquant", "w8a8")
ALPHA_SEQUENCES = 16  # calibration sequences `--alpha auto` scores each alpha on


@dataclass
class Options:
    scheme: str
    keep: list[str]
    group: int | None = None
    damp: float = gptq.DAMP
    act_order: bool = False
    alpha: float | str = smoothquant.ALPHA  # or "auto"
    notes: list[str] = field(default_factory=list)  # what the run wants the user to know
    smoothed: nn.Module | None = None  # smoothquant: the float model after smoothing (per-tensor errors)


def quantize_calibrated(model: nn.Module, tokens: torch.Tensor | None, opt: Options) -> dict[str, Any]:
    """Quantize `model` in place with a calibrated scheme; returns the checkpoint's quantization spec."""
    if opt.scheme in GPTQ:
        return gptq_model(model, tokens, opt)
    alpha = None
    if opt.scheme == "smoothquant":
        if opt.alpha != "auto":
            smoothquant.check_alpha(float(opt.alpha))
        absmax = absmax_stats(model, tokens)
        alpha = search_alpha(model, tokens, absmax, opt) if opt.alpha == "auto" else float(opt.alpha)
        smoothquant.smooth(model, absmax, alpha)
        opt.smoothed = copy.deepcopy(model)
    spec = w8a8.make_spec(opt.keep, alpha)
    w8a8.apply(model, spec)
    return spec


def absmax_stats(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    layers = {n: m for _, group in smoothquant.smoothed_groups(model) for n, m in group.items()}
    stats = calibrate.whole_model_stats(model, tokens, layers, hessian=False, absmax=True, desc="SmoothQuant stats")
    return {n: s.absmax for n, s in stats.items()}


def search_alpha(model: nn.Module, tokens: torch.Tensor, absmax: dict[str, torch.Tensor], opt: Options) -> float:
    """The alpha of smoothquant.SEARCH with the lowest loss of the W8A8 model on calibration sequences."""
    from tinylm.train.objectives import cross_entropy

    held = tokens[:ALPHA_SEQUENCES]
    losses = {}
    for alpha in tqdm(smoothquant.SEARCH, desc="--alpha auto", unit="alpha", leave=False):
        trial = copy.deepcopy(model)
        smoothquant.smooth(trial, absmax, alpha)
        w8a8.apply(trial, w8a8.make_spec(opt.keep, alpha))
        with torch.inference_mode():
            losses[alpha] = sum(float(cross_entropy(trial(b[:, :-1]), b[:, 1:])) for b in held.split(BATCH))
    best = min(losses, key=losses.__getitem__)
    opt.notes.append("--alpha auto: calibration loss " + ", ".join(f"{a}: {v / len(held.split(BATCH)):.4f}"
                                                                  for a, v in losses.items()) + f"; chose {best}")  # fmt: skip
    return best


def gptq_model(model: nn.Module, tokens: torch.Tensor, opt: Options) -> dict[str, Any]:
    from tinylm.quantize.linear import QuantLinear, quantized_names, swap
    from tinylm.quantize.transform import make_spec

    scheme = GPTQ[opt.scheme]
    spec = make_spec(scheme, opt.group, opt.keep) | {"method": "gptq", "damp": opt.damp, "act_order": opt.act_order,
                                                     "calibration_sequences": int(tokens.shape[0])}  # fmt: skip
    group = spec["group_size"]
    groups = {}
    for n in quantized_names(model, opt.keep):  # check every tensor before changing any
        lin = model.get_submodule(n)
        groups[n] = schemes.tensor_group(scheme, n + ".weight", (lin.out_features, lin.in_features), group)

    def quantize(name: str, lin: nn.Linear, hessian: torch.Tensor) -> None:
        r = gptq.gptq(lin.weight.detach().float().numpy(), hessian.numpy(), scheme, groups[name], opt.damp,
                      opt.act_order)  # fmt: skip
        if r.tries > 1:
            opt.notes.append(f"{name}: Hessian not positive definite; damped with {r.damp:g} instead of {opt.damp:g}")
        ql = QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, scheme, group, name + ".weight", "cpu")
        swap(model, name, ql.set_parts(r.parts, lin.bias))

    with torch.inference_mode():
        x, extra = calibrate.first_block_inputs(model, tokens)
        for i, block in enumerate(tqdm(model.layers, desc=f"GPTQ {scheme}", unit="block")):
            layers = {n: m for n, m in linear_layers(block, f"layers.{i}", opt.keep).items() if n in groups}
            with recording(layers, absmax=False) as stats:
                x_next = torch.cat([block(xb, *extra) for xb in x.split(BATCH)])
            for name, lin in layers.items():
                quantize(name, lin, stats[name].hessian)
            x = torch.cat([block(xb, *extra) for xb in x.split(BATCH)]) if layers else x_next
        if "lm_head" in groups:
            h = model.norm(x).reshape(-1, x.shape[-1])
            quantize("lm_head", model.lm_head, (h.T @ h).double())
    return spec

