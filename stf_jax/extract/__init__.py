"""Extraction: contrast pairs or corpora -> hidden states and steering vectors in a run directory.

    summaries = stf_jax.extract(["smollm2-135m", "gemma3-270m"], "shipped", "runs/mine", layers="all")

`stf_jax.extract` is this package (`python -m stf_jax.extract`, its modules) and, called, the function
`extract` below. The layer-spec grammar every entry point resolves with is `stf_jax.core.layers` (its names are
re-exported here). Modules: driver
(`extract_pairs`, `extract_corpus`), store (the run-directory format). Names load lazily, so
importing this package does not import JAX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..core.layers import LayerSpecError, parse_layer_spec, resolve_layer, resolve_layers  # no JAX

_LAZY = {
    "train_vector": "vector", "trait_vector": "store",
    "ExtractOptions": "driver", "ModelSummary": "driver", "extract_corpus": "driver", "extract_pairs": "driver",
    "load_layer": "store", "read_manifest": "store",
}
__all__ = [*_LAZY, "extract", "LayerSpecError", "parse_layer_spec", "resolve_layer", "resolve_layers"]


def extract(models: str | Sequence[str], pairs, out: str | Path, *, traits: Sequence[str] | None = None,
            per_trait: int | None = None, split: str | None = None, **options):
    """Extract steering vectors for contrast pairs from each model into the run directory `out`.

    models: one or several loaded Models (not loaded again) or names/paths (registry names, HF ids or local
      checkpoints, as `load_model` takes).
    pairs: ContrastPairs, or a dataset as `--pairs` takes it ("shipped", a JSONL/CSV/Parquet file or
      directory, "hf:NAME[:SPLIT]"), narrowed by traits / per_trait / split as on the command line.
    options: `ExtractOptions` fields: layers (a layer spec: -6, 0.67, 10:20, all; default -6), pooling,
      dtype, batch_size, max_length, chat_template, overwrite, progress, ...
    Returns one `ModelSummary` per model; read vectors back with `stf_jax.extract.load_layer`. A plain-text
    corpus (token states for affine maps) goes through `extract_corpus`."""
    from .driver import ExtractOptions, extract_pairs

    name = "custom"
    if isinstance(pairs, (str, Path)):
        from .inputs import read_pairs

        pairs, name = read_pairs(str(pairs), traits, per_trait, split, options.get("seed", 0))
    elif traits or per_trait or split:
        raise TypeError("traits, per_trait and split select from a dataset name or path, not from given pairs")
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    models = [m if hasattr(m, "params") else str(m) for m in models]  # a loaded Model is used as it is
    return extract_pairs(models, list(pairs), out, ExtractOptions(**options), dataset_name=name)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)


from .. import _callable_package  # noqa: E402

_callable_package(__name__, extract)
