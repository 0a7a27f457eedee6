"""Command-line flags derived from a stage's config dataclass, so an option is declared once.

`add_fields(parser, SteerConfig, {"ridge": "help", ...})` adds `--ridge` with the field's type and
default (bools become `--x / --no-x`, tuples take several values, `float | None` takes a float), and
`fields_from_args(args, SteerConfig, names)` gives back the {field: value} to build the config with.
Flag names are the field names with '-' for '_', as the experiment YAML spells them with '_'.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar(tp) -> type:
    """The one concrete type of a field annotation: float for `float | None`, str for `tuple[str, ...]`."""
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple) and len(args) == 1:
        return _scalar(args[0])
    return tp


def add_fields(parser: argparse.ArgumentParser, cls, helps: dict[str, str]) -> None:
    """Add a flag for each field of dataclass `cls` named in `helps` (field name -> help text)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, text in helps.items():
        default = fields[name].default
        tp = hints[name]
        kwargs: dict[str, Any] = {"default": default, "dest": name}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kwargs.update(nargs="+", type=_scalar(tp))
        else:
            kwargs["type"] = _scalar(tp)
        parser.add_argument(_flag(name), help=f"{text} [{_show(default)}]", **kwargs)


def fields_from_args(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """{field: value} of the named fields, tuples for lists."""
    return {n: tuple(v) if isinstance(v, list) else v for n, v in ((n, getattr(args, n)) for n in names)}


def _show(default) -> str:
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return str(default)
