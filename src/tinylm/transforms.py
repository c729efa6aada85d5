"""Transforms of the plain model that a checkpoint declares: quantization, adapters.

A checkpoint's `config.json` holds the model fields and, optionally, one object per transform section:

    {"n_layers": 6, ..., "quantization": {"kind": "q8_0", ...}, "adapters": {"kind": "lora", "rank": 8, ...}}

Each section's "kind" names a transform registered here. Loading a checkpoint builds the plain model
on "meta" (no memory), applies the declared transforms in SECTIONS order (quantize the base, then put
adapters on top, as QLoRA does), then loads the tensors and validates them against the transformed
layout. Saving writes the sections the model records in `model.transforms` (set by `apply`), so what is
saved is what loads.

The contract for a transform kind (helpers own theirs: `tinylm.quantize`, `tinylm.adapters`):

    register(section, kind, layout=..., apply=...)

  layout(cfg, spec, layout) -> layout
      torch-free: the tensor layout (`tinylm.layout`, name -> (shape, dtype name)) of the model after
      this transform, given the one before; e.g. replace "layers.0.attn.wo.weight" (float) by an int8
      weight and a float32 scale. The NumPy runtime and the file validation use it.
  apply(model, spec) -> None
      torch: swap modules of `model` in place (e.g. nn.Linear -> a quantized Linear with nn.Linear's
      call signature). It runs on a "meta" model before loading (allocate nothing real: create new
      tensors on the device of the ones they replace) and on a real model to transform it (quantize
      the weights it finds). The new modules' state_dict names must be exactly the layout's names.

`spec` is the section's JSON object (with its "kind"). The module that registers kinds must itself be
torch-free at import (torch inside `apply` only): it is found through PROVIDERS when a checkpoint
declares its section, so neither the registry nor a torch-free reader needs to import it up front.
An unknown section or kind is one line naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinylm.config import TRANSFORM_SECTIONS as SECTIONS
from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.layout import Layout, tensor_layout

# the module that registers each section's kinds, imported on first use (absent until its helper lands)
PROVIDERS = {"quantization": "tinylm.quantize", "adapters": "tinylm.adapters"}

Spec = dict[str, Any]
Transforms = dict[str, Spec]  # section -> spec, as in config.json


@dataclass(frozen=True)
class Kind:
    layout: Callable[[ModelConfig, Spec, Layout], Layout]
    apply: Callable[[Any, Spec], None]  # (Model, spec); Any keeps this module torch-free


_REGISTRY: dict[str, dict[str, Kind]] = {s: {} for s in SECTIONS}


def register(section: str, kind: str, *, layout: Callable[[ModelConfig, Spec, Layout], Layout],
             apply: Callable[[Any, Spec], None]) -> None:  # fmt: skip
    if section not in _REGISTRY:
        raise ValueError(f"unknown transform section {section!r}; sections: {', '.join(SECTIONS)}")
    _REGISTRY[section][kind] = Kind(layout, apply)


def unregister(section: str, kind: str) -> None:
    _REGISTRY[section].pop(kind, None)


def lookup(section: str, spec: Spec, source: str = "config.json") -> Kind:
    """The registered kind a section's spec names, or one line saying what is wrong."""
    if section not in _REGISTRY:
        raise TinyLMError(f"{source}: unknown section {section!r}; this tinylm knows {', '.join(SECTIONS)}")
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise TinyLMError(f'{source}: section {section!r} needs an object with a "kind", got {spec!r}')
    kinds = _REGISTRY[section]
    if spec["kind"] not in kinds and section in PROVIDERS:
        try:
            importlib.import_module(PROVIDERS[section])  # registers its kinds
        except ModuleNotFoundError as e:
            if e.name is None or not PROVIDERS[section].startswith(e.name):
                raise
    if spec["kind"] not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        raise TinyLMError(f"{source}: unknown {section} kind {spec['kind']!r} (known: {known}); "
                          "was it written by a newer tinylm?")  # fmt: skip
    return kinds[spec["kind"]]


def transformed_layout(cfg: ModelConfig, transforms: Transforms, source: str = "config.json") -> Layout:
    """The tensors of a checkpoint of `cfg` with `transforms` applied."""
    layout = tensor_layout(cfg)
    for section in SECTIONS:
        if section in transforms:
            layout = lookup(section, transforms[section], source).layout(cfg, transforms[section], layout)
    return layout


def apply(model: Any, section: str, spec: Spec) -> None:
    """Transform `model` in place and record it in `model.transforms` (what saving writes)."""
    lookup(section, spec).apply(model, spec)
    model.transforms = {**applied(model), section: spec}


def apply_all(model: Any, transforms: Transforms) -> None:
    for section in SECTIONS:
        if section in transforms:
            apply(model, section, transforms[section])


def applied(model: Any) -> Transforms:
    """The transforms `model` went through (none for a plain model)."""
    return dict(getattr(model, "transforms", {}))
