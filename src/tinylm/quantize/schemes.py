"""The registry of quantization schemes (torch-free). A scheme is a module with:

    BITS, GROUP                       bits per value, default group size (0: one scale per row)
    PARTS                             names of the arrays stored per matrix
    quantize(w, group) -> parts       float (out, in) -> named NumPy arrays (what the checkpoint stores)
    layout(shape, group) -> {part: (shape, dtype)}
    form(parts, group) -> Form        the arrays as the kernels read them (blocks.Form)
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.quantize import int4, int8, nf4, q4_0, q8_0
from tinylm.quantize.blocks import Form, group_for

SCHEMES: dict[str, ModuleType] = {"int8": int8, "q8_0": q8_0, "q4_0": q4_0, "int4": int4, "nf4": nf4}
FIXED_GROUP = ("q8_0", "q4_0")  # GGUF's block formats: groups of 32, nothing else
DEFAULT_KEEP = ("tok_emb", "pos_emb", "lm_head")  # layers left float: the embeddings and the output head


def is_kept(layer: str, keep: list[str]) -> bool:
    """Whether `keep` (layer names) names `layer` or a module containing it."""
    return any(layer == k or layer.startswith(k + ".") for k in keep)


def get_scheme(name: str) -> ModuleType:
    if name not in SCHEMES:
        raise TinyLMError(f"unknown quantization scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


def check_group(scheme: str, group: int | None) -> int:
    """The group size asked for, validated for `scheme` (None: the scheme's default)."""
    mod = get_scheme(scheme)
    if group is None or group == mod.GROUP:
        return mod.GROUP
    if scheme in FIXED_GROUP or scheme == "int8":
        raise TinyLMError(f"scheme {scheme} has a fixed group size ({mod.GROUP or 'one per row'}); drop --group-size")
    if group not in (32, 64, 128, 256):
        raise TinyLMError(f"group size {group} is not one of 32, 64, 128, 256; choose one of those")
    return group


def tensor_group(scheme: str, name: str, shape: tuple[int, int], group: int) -> int:
    """The group a tensor of `shape` gets (see blocks.group_for): a fixed-group scheme refuses a row
    length its group does not divide, the others fall back to a smaller group."""
    if scheme == "int8":
        return shape[1]
    smallest = group if scheme in FIXED_GROUP else 32
    return group_for(name, shape[1], group, smallest)


def quantize(scheme: str, name: str, w: np.ndarray, group: int) -> dict[str, np.ndarray]:
    g = tensor_group(scheme, name, w.shape, group)
    return get_scheme(scheme).quantize(np.asarray(w, dtype=np.float32), g)


def layout(scheme: str, name: str, shape: tuple[int, int], group: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return get_scheme(scheme).layout(shape, tensor_group(scheme, name, shape, group))


def form(scheme: str, name: str, parts: dict[str, np.ndarray], shape: tuple[int, int], group: int) -> Form:
    return get_scheme(scheme).form(parts, tensor_group(scheme, name, shape, group))
