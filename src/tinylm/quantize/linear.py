"""Quantized layers for torch: `QuantLinear` has nn.Linear's call signature (y = x @ W^T + b) and holds
W packed, as buffers that save in safetensors under the layer's name (e.g. `layers.0.mlp.w1.qweight`,
`.scales`), so a quantized checkpoint is ~4x (8-bit) or ~7x (4-bit) smaller than float32.

On CPU with float32 activations it multiplies through our C kernels (tinylm.quantize.kernels; under
torch.compile as the custom op `tinylm::quant_matmul`); elsewhere (CUDA, autograd, other dtypes) it
dequantizes the one matrix and calls F.linear. `quantize_model` swaps a model's nn.Linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinylm.errors import TinyLMError
from tinylm.quantize import kernels, schemes
from tinylm.quantize.blocks import LINEAR, Form
from tinylm.quantize.schemes import DEFAULT_KEEP, is_kept

_DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}


def _form(q: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor | None, lut: torch.Tensor | None,
          bits: int, group: int, offset: float) -> Form:  # fmt: skip
    """A kernels Form over CPU tensors (no copies); a 4-bit form without a table is LINEAR."""
    table = LINEAR if bits == 4 and lut is None else None if lut is None else lut.numpy()
    return Form(bits, group, q.numpy(), scale.numpy(), None if mins is None else mins.numpy(), table, offset)


def _cpu_matmul(x: torch.Tensor, form: Form) -> torch.Tensor:
    """x (B, in) float32 @ W^T through the C kernels; float32 activations unless TINYLM_ACTIVATIONS=int8."""
    acts = kernels.activations_from_env("float32")
    y = kernels.matmul(x.contiguous().numpy(), form, torch.get_num_threads(), activations=acts)
    return torch.from_numpy(y)


@torch.library.custom_op("tinylm::quant_matmul", mutates_args=())
def quant_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, mins: torch.Tensor | None,
                 lut: torch.Tensor | None, bits: int, group: int, offset: float) -> torch.Tensor:  # fmt: skip
    """x (B, in) float32 @ W^T for W given as the parts of a kernels Form (CPU tensors)."""
    form = _form(q, scale, mins, lut, bits, group, offset)
    return _cpu_matmul(x, form)


@quant_matmul.register_fake
def _(x, q, scale, mins, lut, bits, group, offset):
    return x.new_empty(x.shape[0], q.shape[0])


class QuantLinear(nn.Module):
    """A Linear layer (in_features -> out_features) whose weight is stored by a quantization scheme.
    The stored parts are persistent buffers; the float32 scales the kernels read (and NF4's decoded
    absmax) are derived once, after construction or loading (`refresh`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: str, group: int,
                 name: str = "", device: torch.device | str | None = None):  # fmt: skip
        super().__init__()
        self.in_features, self.out_features, self.scheme, self.name = in_features, out_features, scheme, name
        shape = (out_features, in_features)
        self.group = schemes.tensor_group(scheme, name, shape, group)
        for part, (pshape, dtype) in schemes.get_scheme(scheme).layout(shape, self.group).items():
            self.register_buffer(part, torch.empty(pshape, dtype=_DTYPES[dtype], device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device)) if bias else None
        self._kernel: tuple[torch.Tensor | None, ...] = ()  # q, scale, mins, lut: see refresh
        self._bits, self._offset = 8, 0.0
        self._form: Form | None = None  # the same arrays as a kernels Form, for the eager path
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh())

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str, group: int, name: str = "") -> QuantLinear:
        w = linear.weight.detach().float().cpu().numpy()
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme, group, name, "cpu")
        return out.set_parts(schemes.get_scheme(scheme).quantize(w, out.group), linear.bias)

    def set_parts(self, parts: dict[str, np.ndarray], bias: torch.Tensor | None = None) -> QuantLinear:
        """Store `parts` (as the scheme's quantize returns them, e.g. from GPTQ) and the float bias."""
        for part, value in parts.items():
            getattr(self, part).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        if bias is not None:
            self.bias.data.copy_(bias.detach().float().cpu())
        self.refresh()
        return self

    def parts(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).cpu().numpy() for k in schemes.get_scheme(self.scheme).PARTS}

    def form(self) -> Form:
        return schemes.get_scheme(self.scheme).form(self.parts(), self.group)

    def refresh(self) -> None:
        """Derive the kernel's tensors from the stored parts (after loading new ones)."""
        if self.qweight.is_meta:
            return
        f = self.form()
        lut = None if f.lut is LINEAR else f.lut
        self._kernel = tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a))
                             for a in (f.q, f.scale, f.mins, lut))  # fmt: skip
        self._bits, self._offset = f.bits, f.offset
        self._form = _form(*self._kernel, f.bits, self.group, f.offset)  # type: ignore[arg-type]

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (out, in) these parts stand for."""
        return torch.from_numpy(self.form().dequantize()).to(self.qweight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
        if not fast or not self._kernel:
            return F.linear(x, self.dequantized().to(x.dtype), self.bias)
        q, scale, mins, lut = self._kernel
        x2 = x.reshape(-1, self.in_features)
        if torch.compiler.is_compiling():
            y = quant_matmul(x2, q, scale, mins, lut, self._bits, self.group, self._offset)
        else:  # the plain call: the custom op's dispatch costs more than a small product here
            y = _cpu_matmul(x2, self._form)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}, group={self.group}"


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, int]
    group: int
    bytes_before: int  # float32
    bytes_after: int
    rmse: float


def quantized_names(model: nn.Module, keep: Sequence[str]) -> list[str]:
    """The Linear layers `quantize_model` swaps: all but those named in `keep` (or inside them)."""
    cfg = getattr(model, "config", None)
    if "lm_head" not in keep and cfg is not None and cfg.tie_embeddings:
        raise TinyLMError("the output head shares the token embedding (tie_embeddings), which stays float; "
                          "keep lm_head (drop --quantize-embeddings) or untie the model")  # fmt: skip
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not is_kept(n, list(keep))]


def swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model(model: nn.Module, scheme: str, group: int | None = None, keep: Sequence[str] = DEFAULT_KEEP) -> None:
    """Replace the model's nn.Linear layers (except those in `keep`) by QuantLinear, in place."""
    group = schemes.check_group(scheme, group)
    names = quantized_names(model, keep)
    for n in names:  # check every tensor before changing any
        lin = model.get_submodule(n)
        schemes.tensor_group(scheme, n + ".weight", (lin.out_features, lin.in_features), group)
    for n in names:
        swap(model, n, QuantLinear.from_linear(model.get_submodule(n), scheme, group, n + ".weight"))


def tensor_reports(original: nn.Module, quantized: nn.Module) -> list[TensorReport]:
    """Size and error of every quantized weight against the float model it came from."""
    reports = []
    for n, m in quantized.named_modules():
        if isinstance(m, QuantLinear):
            w = original.get_submodule(n).weight.detach().float().cpu()
            rmse = float((m.dequantized() - w).pow(2).mean().sqrt())
            after = sum(t.numel() * t.element_size() for k, t in m.state_dict().items() if k != "bias")
            reports.append(TensorReport(n + ".weight", tuple(w.shape), m.group, w.numel() * 4, after, rmse))
    return reports


def stored_parts(model: nn.Module, scheme: str) -> dict[str, dict[str, np.ndarray]]:
    """weight name -> stored parts, for the model's layers quantized by `scheme` (exporters write them as they are)."""
    return {f"{n}.weight": m.parts() for n, m in model.named_modules()
            if isinstance(m, QuantLinear) and m.scheme == scheme}  # fmt: skip


def dequantized_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`state` (the model's saved tensors) with each quantized layer's parts replaced, in place in the
    order, by its dequantized float32 `weight`: what exporters to float formats read."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    out = {}
    for k, v in state.items():
        layer, _, part = k.rpartition(".")
        if layer not in layers:
            out[k] = v
        elif part == "qweight":
            out[f"{layer}.weight"] = layers[layer].dequantized()
        elif part == "bias":
            out[k] = v
    return out
