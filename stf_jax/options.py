"""Command-line flags derived from a stage's config dataclass, so an option is declared once.

`add_fields(parser, SteerConfig, {"ridge": "help", ...})` adds `--ridge` with the field's type and
default (bools become `--x / --no-x`, tuples take zero or more values, `float | None` takes a float), and
`fields_from_args(args, SteerConfig, names)` gives back the {field: value} to build the config with.
Flag names are the field names with '-' for '_', as the experiment YAML spells them with '_'. A
`Literal[...]` field becomes a flag with those choices. Old flag spellings stay accepted through
`renamed={"old-flag": "field"}`, with a deprecation message naming the new flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from typing import Any, Iterable

from .errors import UserError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar(tp) -> Any:
    """The one concrete type of a field annotation: float for `float | None`, str for `tuple[str, ...]`,
    the Literal itself for `Literal["a", "b"] | None`."""
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple) and len(args) == 1:
        return _scalar(args[0])
    return tp


def _optional_of(tp) -> Any:
    """`X | None` -> X (a flag cannot spell None; its default can)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _type_kwargs(tp) -> dict[str, Any]:
    """argparse type / choices for one scalar annotation."""
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        return {"type": type(choices[0]), "choices": choices}
    return {"type": tp}


class _Renamed(argparse.Action):
    """An old flag spelling: sets the field and says on stderr what the flag is called now."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_fields(parser, cls, helps: dict[str, str], renamed: dict[str, str] | None = None, prefix: str = "") -> None:
    """Add a flag for each field of dataclass `cls` named in `helps` (field name -> help text).

    renamed: {"old-flag": "field"} kept working with a deprecation message (a bool field needs none:
    its `--no-x` exists already). A help text that ends in ']' states its own default. prefix: for a
    nested config whose field names clash with the outer one ("adapter_" -> --adapter-batch-size, read
    back with the same prefix). `parser` may be an argument group."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, text in helps.items():
        default = fields[name].default
        tp = _optional_of(hints[name])
        kwargs: dict[str, Any] = {"default": default, "dest": prefix + name}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kwargs.update(nargs="*", **_type_kwargs(_scalar(tp)))
        else:
            kwargs.update(_type_kwargs(_scalar(tp)))
        shown = text if text.endswith("]") else f"{text} [{_show(default)}]"
        parser.add_argument(_flag(prefix + name), help=shown, **kwargs)
    for old, name in (renamed or {}).items():
        parser.add_argument("--" + old, dest=prefix + name, action=_Renamed, new_flag=_flag(prefix + name),
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS, **_type_kwargs(_scalar(hints[name])))


def fields_from_args(args: argparse.Namespace, names: Iterable[str], prefix: str = "") -> dict[str, Any]:
    """{field: value} of the named fields (flags added with `prefix`), tuples for lists."""
    return {n: tuple(v) if isinstance(v, list) else v for n, v in ((n, getattr(args, prefix + n)) for n in names)}


def _show(default) -> str:
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return str(default)


# ---------------------------------------------------------------- constraints, declared beside the option


class OptionError(UserError, ValueError):
    """A setting outside what its option allows (type, range, finiteness), from a flag, a YAML key or a call."""


def option(default, *, ge=None, gt=None, le=None, lt=None):
    """A config field whose range is declared beside it: `batch_size: int = option(32, ge=1)`. Checked with
    the field's type by `check_options` (each config's __post_init__), so a flag, a YAML key and a Python
    argument meet one rule."""
    return dataclasses.field(default=default, metadata={"range": (ge, gt, le, lt)})


def check_options(cfg) -> None:
    """Every field of the dataclass `cfg` against its annotation (int: an integer, not a bool or a float;
    float: a finite number; bool; str; Literal choices; tuples of those; None where `| None`) and its
    declared range. Raises OptionError naming the field as `name=`."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        problem = _type_problem(value, hints[f.name])
        if problem is None and value is not None and "range" in f.metadata:
            problem = _range_problem(value, *f.metadata["range"])
        if problem:
            raise OptionError(f"{f.name}= {problem}, got {value!r:.60}")


def _type_problem(value, tp) -> str | None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"must be one of {list(args)}"
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return "must be a list"
        inner = [a for a in args if a is not Ellipsis]
        return next((p for p in (_type_problem(v, inner[0]) for v in value) if p), None) if inner else None
    if tp is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be finite"
    if tp is str:
        return None if isinstance(value, str) else "must be text"
    return None  # other types (nested configs, sequences) are checked by their own classes


def _range_problem(value, ge, gt, le, lt) -> str | None:
    if isinstance(value, (tuple, list)):
        return next((p for p in (_range_problem(v, ge, gt, le, lt) for v in value) if p), None)
    for bound, ok, word in ((ge, lambda b: value >= b, ">="), (gt, lambda b: value > b, ">"),
                            (le, lambda b: value <= b, "<="), (lt, lambda b: value < b, "<")):
        if bound is not None and not ok(bound):
            return f"must be {word} {bound}"
    return None


class LazyChoices:
    """argparse `choices` read from a table in a heavy module (e.g. the alignment methods, which import
    JAX) only when a flag is checked or help is shown, so that a command's other paths start fast."""

    def __init__(self, module: str, attr: str):
        self.module, self.attr = module, attr

    def _names(self) -> list[str]:
        from importlib import import_module

        return list(getattr(import_module(self.module), self.attr))

    def __contains__(self, item) -> bool:
        return item in self._names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())
