"""The "quantization" checkpoint transform (see tinylm.transforms): config.json declares

    "quantization": {"kind": "q4_0", "group_size": 32, "keep": ["tok_emb", "pos_emb", "lm_head"]}

and every Linear weight of the model but those in `keep` is stored by the scheme `kind` (its parts
replace `<layer>.weight` in the tensor layout). A tensor's group size follows from its shape
(schemes.tensor_group), so the spec needs no per-tensor entries. Torch-free at import: `apply` brings
in torch only when called.
"""

from __future__ import annotations

from typing import Any

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.quantize import schemes
from tinylm.quantize.blocks import Form
from tinylm.quantize.schemes import DEFAULT_KEEP, is_kept

EMBEDDINGS = ("tok_emb.weight", "pos_emb.weight")  # looked up by row, never multiplied: not Linear layers
Layout = dict[str, tuple[tuple[int, ...], str]]


def make_spec(scheme: str, group: int | None = None, keep: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
    return {"kind": scheme, "group_size": schemes.check_group(scheme, group),
            "keep": list(DEFAULT_KEEP if keep is None else keep)}  # fmt: skip


def read_spec(spec: dict[str, Any]) -> tuple[str, int, list[str]]:
    """(scheme, group size, keep) of a spec, or one line saying what is wrong with it."""
    scheme, group, keep = spec.get("kind"), spec.get("group_size"), spec.get("keep", [])
    schemes.get_scheme(str(scheme))
    if not isinstance(group, int) or not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise TinyLMError(f'config.json: quantization needs an integer "group_size" and a list "keep", got {spec}')
    return str(scheme), schemes.check_group(str(scheme), group), keep


def quantized_weights(layout: Layout, keep: list[str]) -> list[str]:
    """The Linear weights of a plain layout that the transform stores quantized."""
    return [name for name, (shape, _) in layout.items()
            if len(shape) == 2 and name.endswith(".weight") and name not in EMBEDDINGS
            and not is_kept(name.removesuffix(".weight"), keep)]  # fmt: skip


def layout(cfg: ModelConfig, spec: dict[str, Any], before: Layout) -> Layout:
    scheme, group, keep = read_spec(spec)
    swap = set(quantized_weights(before, keep))
    after: Layout = {}
    for name, (shape, dtype) in before.items():
        if name not in swap:
            after[name] = (shape, dtype)
            continue
        layer = name.removesuffix(".weight")
        for part, entry in schemes.layout(scheme, name, shape, group).items():  # type: ignore[arg-type]
            after[f"{layer}.{part}"] = entry
    return after


def apply(model: Any, spec: dict[str, Any]) -> None:
    """Swap the model's Linear layers for QuantLinear: empty ones on a "meta" model (to load into),
    quantized from the weights on a real one."""
    from tinylm.quantize.linear import QuantLinear, quantize_model, quantized_names, swap

    scheme, group, keep = read_spec(spec)
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        raise TinyLMError("this model is already quantized; quantize the original float checkpoint instead")
    if not model.tok_emb.weight.is_meta:
        quantize_model(model, scheme, group, keep)
        return
    for name in quantized_names(model, keep):
        m = model.get_submodule(name)
        swap(model, name, QuantLinear(m.in_features, m.out_features, m.bias is not None, scheme, group,
                                      name + ".weight", m.weight.device))  # fmt: skip


def register() -> None:
    """Register every scheme as a kind of the "quantization" section (when the registry exists)."""
    try:
        from tinylm import transforms
    except ImportError:  # a tinylm without checkpoint transforms
        return
    for kind in schemes.SCHEMES:
        transforms.register("quantization", kind, layout=layout, apply=apply)


def numpy_forms(spec: dict[str, Any], weights: dict[str, Any]) -> tuple[dict[str, Form], dict[str, Any]]:
    """For the NumPy runtime: (weight name -> Form of each quantized layer, the other tensors). The
    packed arrays stay as they are in memory; only the small per-group scales are widened to float32."""
    if spec.get("kind") == "w8a8":  # stored as int8; multiplied with int8 activations (runtime's `x @ w`)
        from tinylm.quantize.int8_gemm import Matrix

        forms, rest = numpy_forms({**spec, "kind": "int8"}, weights)
        return {k: Matrix(f.q, f.scale) for k, f in forms.items()}, rest  # type: ignore[misc]
    scheme, group, _ = read_spec(spec)
    parts_of = schemes.get_scheme(scheme).PARTS
    layers = {k.rsplit(".", 1)[0] for k in weights if k.endswith(".qweight")}
    forms = {}
    for layer in layers:
        parts = {p: weights[f"{layer}.{p}"] for p in parts_of}
        rows = parts["qweight"].shape[0]
        cols = parts["qweight"].shape[1] * (2 if schemes.get_scheme(scheme).BITS == 4 else 1)
        forms[f"{layer}.weight"] = schemes.form(scheme, f"{layer}.weight", parts, (rows, cols), group)
    rest = {k: v for k, v in weights.items() if k.rsplit(".", 1)[0] not in layers or k.endswith(".bias")}
    return forms, rest


def quantize_weights(spec: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """A plain checkpoint's float NumPy tensors as the transform stores them (torch-free `apply`)."""
    scheme, group, keep = read_spec(spec)
    swap = set(quantized_weights({k: (tuple(v.shape), "float") for k, v in weights.items()}, keep))
    out = {}
    for name, w in weights.items():
        if name not in swap:
            out[name] = w
            continue
        layer = name.removesuffix(".weight")
        out |= {f"{layer}.{p}": a for p, a in schemes.quantize(scheme, name, w, group).items()}
    return out
