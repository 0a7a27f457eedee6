"""Extraction: contrast pairs or corpora -> hidden states and steering vectors in a run directory.

Modules: layers (the layer-spec grammar every entry point resolves with), run (`extract_pairs`,
`extract_corpus`), store (the run-directory format). Names load lazily, so `stf_jax.extract.layers`
imports without JAX.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "parse_layer_spec": "layers", "resolve_layer": "layers", "resolve_layers": "layers", "LayerSpecError": "layers",
    "ExtractOptions": "run", "ModelSummary": "run", "extract_corpus": "run", "extract_pairs": "run",
    "load_layer": "store", "read_manifest": "store",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
