"""LoRA (Hu et al., 2021): a frozen Linear plus a trained low-rank update, y = base(x) + (α/r)·B·A·x.

`LoRALinear` wraps any module with nn.Linear's call signature (a plain Linear, or a quantized one as in
QLoRA) and adds one update per output slice it is given, so the fused `wqkv` can adapt q and v but not
k. A starts random (Kaiming-uniform, as the paper's code and peft), B at zero: step 0 is the base.

State-dict names are the base's own (`layers.0.attn.wqkv.weight`) plus `<module>.lora_A.<target>` and
`<module>.lora_B.<target>`: a base checkpoint loads into an adapted model unchanged, and the adapter's
tensors alone are the adapter (tinylm.adapters.spec.adapter_layout).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.adapters.spec import LoraSpec, placements
from tinylm.errors import TinyLMError

BASE = "base."


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Module, slices: dict[str, tuple[int, int, int]], rank: int, alpha: float,
                 dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.slices = {t: (start, rows) for t, (start, rows, _) in sorted(slices.items(), key=lambda kv: kv[1][0])}
        self.rank, self.scale = rank, alpha / rank
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = _device_of(base)
        self.lora_A = nn.ParameterDict({t: torch.empty(rank, self.in_features, device=device) for t in slices})
        self.lora_B = nn.ParameterDict({t: torch.zeros(rows, rank, device=device) for t, (_, rows, _) in slices.items()})
        if device.type != "meta":  # on "meta" the weights are about to be loaded: nothing to initialise
            for a in self.lora_A.values():
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's own init, as peft uses for A
        self.merged = False
        self._register_state_dict_hook(_drop_base_prefix)
        self.register_load_state_dict_pre_hook(_add_base_prefix)

    def extra_repr(self) -> str:
        return f"targets={','.join(self.slices)}, rank={self.rank}, scale={self.scale:g}, merged={self.merged}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Linear) or not torch.is_grad_enabled():
            y = self.base(x)  # (..., out)
        else:  # QLoRA: the gradient reaches x through a weight that is never kept in float
            y = _FrozenPacked.apply(x, self.base)
        if self.merged:
            return y
        h = self.drop(x)
        parts, at = [], 0
        for t, (start, rows) in self.slices.items():  # in row order
            delta = F.linear(F.linear(h, self.lora_A[t]), self.lora_B[t]) * self.scale  # (..., rows)
            parts += [y[..., at:start], y[..., start : start + rows] + delta]
            at = start + rows
        parts.append(y[..., at:])
        return torch.cat(parts, dim=-1)

    def delta_weight(self, t: str) -> torch.Tensor:
        """The update of target `t` as a weight (rows, in), in float32."""
        return self.scale * (self.lora_B[t].float() @ self.lora_A[t].float())

    @torch.no_grad()
    def merge(self) -> float:
        """Add the updates into the base weight (a no-op when merged already). Returns the largest absolute
        error the base's storage introduced: 0 for a float base, the re-quantization error for a quantized one."""
        if self.merged:
            return 0.0
        w = dense_weight(self.base)
        for t, (start, rows) in self.slices.items():
            w[start : start + rows] += self.delta_weight(t)
        error = set_dense_weight(self.base, w)
        self.merged = True
        return error

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the updates back out of the base weight (float bases only: re-quantizing is lossy)."""
        if not self.merged:
            return
        if not isinstance(self.base, nn.Linear):
            raise TinyLMError("cannot unmerge from a quantized base (merging re-quantized it); reload the adapter")
        w = dense_weight(self.base)
        for t, (start, rows) in self.slices.items():
            w[start : start + rows] -= self.delta_weight(t)
        set_dense_weight(self.base, w)
        self.merged = False


class _FrozenPacked(torch.autograd.Function):
    """y = base(x) for a frozen quantized base, saving nothing for backward but the module itself (its packed
    weight): backward dequantizes it once more for dL/dx = dL/dy · W. Checkpointing the call instead would
    also redo the forward product in backward; keeping W from forward would hold every layer's float weight
    at once, which is the memory QLoRA exists to save."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, base: nn.Module) -> torch.Tensor:
        ctx.base = base
        # torch's product, not the module's kernel path: that hands training-sized batches to NumPy's BLAS,
        # whose own threads ignore --threads
        return F.linear(x, base.dequantized().to(x.dtype), base.bias)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor, None]:
        w = ctx.base.dequantized().to(grad_y.dtype)  # (out, in)
        return grad_y @ w, None  # (..., in)


def dense_weight(base: nn.Module) -> torch.Tensor:
    """A float32 copy of a Linear-like module's weight (out, in); a quantized one is dequantized."""
    if isinstance(base, nn.Linear):
        return base.weight.detach().float().clone()
    if hasattr(base, "dequantized"):
        return base.dequantized().float()
    raise TinyLMError(f"cannot merge into a {type(base).__name__}: it has neither a weight nor dequantized()")


def set_dense_weight(base: nn.Module, w: torch.Tensor) -> float:
    """Store `w` (out, in) as the module's weight; the largest absolute error its storage introduced
    (bf16 rounding, or re-quantizing a quantized module with its own scheme)."""
    if isinstance(base, nn.Linear):
        base.weight.copy_(w)
        return (base.weight.float() - w).abs().max().item()
    if hasattr(base, "from_linear"):  # a QuantLinear (tinylm.quantize): quantize w as it quantized its weight
        plain = nn.Linear(base.in_features, base.out_features, bias=False)
        plain.weight.data = w.cpu()
        fresh = type(base).from_linear(plain, base.scheme, base.group, base.name)
        for name, buf in fresh.named_buffers(recurse=False):
            getattr(base, name).copy_(buf)
        base.refresh()
        return (base.dequantized().float() - w).abs().max().item()
    raise TinyLMError(f"cannot merge into a {type(base).__name__}: it cannot store a new weight")


def _device_of(m: nn.Module) -> torch.device:
    for t in (*m.parameters(), *m.buffers()):
        return t.device
    return torch.device("cpu")


def _drop_base_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """Save the base's tensors under the module's own name (x.weight, not x.base.weight)."""
    for k in [k for k in state_dict if k.startswith(prefix + BASE)]:
        state_dict[prefix + k[len(prefix + BASE) :]] = state_dict.pop(k)


def _add_base_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """The inverse of _drop_base_prefix, before the base loads its tensors."""
    for k in [k for k in state_dict if k.startswith(prefix) and not k[len(prefix) :].startswith(("lora_", BASE))]:
        state_dict[prefix + BASE + k[len(prefix) :]] = state_dict.pop(k)


def apply_lora(model: nn.Module, spec: LoraSpec) -> None:
    """Wrap every targeted Linear of `model` in a LoRALinear (in place) and freeze everything else."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, slices in placements(model.config, spec).items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, attr)
        if isinstance(base, LoRALinear):
            raise TinyLMError(f"{name} already has a LoRA adapter; merge it before adding another")
        setattr(parent, attr, LoRALinear(base, slices, spec.rank, spec.alpha, spec.dropout))


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module, unwrap: bool = True) -> float:
    """Merge every adapter into its base weight; with `unwrap`, put the bases back in place of the
    wrappers (a plain model again). Returns the largest merge error (nonzero for a quantized base)."""
    error = max((m.merge() for m in lora_modules(model)), default=0.0)
    if unwrap:
        for name, m in list(model.named_modules()):
            if isinstance(m, LoRALinear):
                parent_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent_name), attr, m.base)
        model.transforms = {k: v for k, v in getattr(model, "transforms", {}).items() if k != "adapters"}
    return error


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.unmerge()
