"""Reading YAML configs safely: no aliases, no non-finite numbers.

A 1 KB YAML file of nested aliases ("billion laughs") expands to gigabytes when anything walks the result
(the experiment's stage hash did). stf_jax configs never need anchors or aliases, so the loader refuses
an alias where it meets one, before anything is expanded. `.inf` / `.nan` are refused too: no stf_jax
setting is infinite, and a NaN would compare unequal to itself in every check after it.
"""

from __future__ import annotations

import math

import yaml

from ..errors import UserError


class ConfigFileError(UserError, ValueError):
    """A YAML config that is not plain data stf_jax can use."""


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor}: YAML aliases are not allowed "
                                              "in stf_jax configs (write the value out)", event.start_mark)
        return super().compose_node(parent, index)


def _finite(obj, where: str = ""):
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigFileError(f"{where or 'a value'} is {obj}; give a finite number")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite(v, f"{where}[{i}]")
    return obj


def load_yaml(text: str, name: str = "config"):
    """The data of a YAML document (aliases and non-finite numbers refused: ConfigFileError naming `name`)."""
    from ..errors import yaml_problem

    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 — a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{name}: not valid YAML ({yaml_problem(exc)})") from None
    try:
        return _finite(data)
    except ConfigFileError as exc:
        raise ConfigFileError(f"{name}: {exc}") from None


def read_config(path, name: str | None = None) -> dict:
    """A YAML config file's mapping (empty file: {}): unreadable, non-UTF-8, non-YAML, aliased, non-finite or
    non-mapping content is a ConfigFileError naming `name` (default: the path)."""
    from pathlib import Path

    name = name or str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{name}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{name}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    data = load_yaml(text, name) or {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{name}: expected a mapping of keys to values, got {type(data).__name__}")
    return data
