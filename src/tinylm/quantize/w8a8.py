"""The "w8a8" kind of the "quantization" checkpoint transform (torch-free at import):

    "quantization": {"kind": "w8a8", "group_size": 0, "keep": [...], "smoothing": {"alpha": 0.5} | null}

Weights are stored exactly as the int8 scheme stores them (qweight int8, scales float32 per output
channel); what differs is the layer that multiplies them (w8a8_linear.W8A8Linear: int8 activations
too). SmoothQuant's scales are folded into the norm weights and the int8 weights before saving, so
a smoothed checkpoint needs nothing more to load; "smoothing" only records how it was made.
"""

from __future__ import annotations

from typing import Any

from tinylm.config import ModelConfig
from tinylm.quantize import transform
from tinylm.quantize.schemes import DEFAULT_KEEP

KIND = "w8a8"


def make_spec(keep: list[str] | None = None, alpha: float | None = None) -> dict[str, Any]:
    return {"kind": KIND, "group_size": 0, "keep": list(DEFAULT_KEEP if keep is None else keep),
            "smoothing": None if alpha is None else {"alpha": alpha}}  # fmt: skip


def _as_int8(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "kind": "int8"}


def layout(cfg: ModelConfig, spec: dict[str, Any], before: transform.Layout) -> transform.Layout:
    return transform.layout(cfg, _as_int8(spec), before)


def apply(model: Any, spec: dict[str, Any]) -> None:
    """Swap the model's Linear layers (but `keep`) for W8A8Linear: empty on "meta", quantized otherwise."""
    from tinylm.errors import TinyLMError
    from tinylm.quantize.linear import QuantLinear, quantized_names, swap
    from tinylm.quantize.w8a8_linear import W8A8Linear

    _, _, keep = transform.read_spec(_as_int8(spec))
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        raise TinyLMError("this model is already quantized; quantize the original float checkpoint instead")
    meta = model.tok_emb.weight.is_meta
    for name in quantized_names(model, keep):
        m = model.get_submodule(name)
        if meta:
            new = W8A8Linear(m.in_features, m.out_features, m.bias is not None, name=name + ".weight",
                             device=m.weight.device)  # fmt: skip
        else:
            new = W8A8Linear.from_linear(m, "int8", 0, name + ".weight")
        swap(model, name, new)


def register() -> None:
    try:
        from tinylm import transforms
    except ImportError:  # a tinylm without checkpoint transforms
        return
    transforms.register("quantization", KIND, layout=layout, apply=apply)
