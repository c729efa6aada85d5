"""Dataclasses read back from JSON with every field type-checked against its annotation, so a damaged
or hand-edited file (`"dim": 48.0`, `"step": "ten"`) is one line naming the field, not a crash later."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

from tinylm.errors import TinyLMError

T = TypeVar("T")


def from_json(cls: type[T], d: Any, source: str, what: str = "field") -> T:
    """`cls(**d)` after checking that `d` is an object, has no unknown keys and every value fits its field."""
    if not isinstance(d, dict):
        raise TinyLMError(f"{source}: expected a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise TinyLMError(f"{source}: unknown {what}(s) {', '.join(unknown)}; was it written by a newer tinylm?")
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        if not _fits(value, hints[name]):
            raise TinyLMError(f"{source}: {what} {name} = {value!r} is not {_describe(hints[name])}; fix or remove it")
    return cls(**d)


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 1.0 as 1 in some tools: an int is a fine float
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # containers and the rest: left to the class


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )
