"""stf_jax: extract, align and transfer steering vectors between language models in JAX/Flax.

Public API (imported lazily, so data-only tools such as `python -m stf_jax.data` start without JAX):
    load_model(name_or_path, dtype="float32")    -> Model (.config, .tokenizer, .hidden_states(...))
    fit_map(run_dir, source, target, method, layers, out)  -> MapSet fitted on an extraction run
    load_map(path)                                -> MapSet (a map-set directory or one map file)
    transfer(vector_or_file, map_set)             -> Carried (.directions {target HF layer: vector})
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "load_model": "stf_jax.models.loading",
    "Model": "stf_jax.models.model",
    "DecoderConfig": "stf_jax.models.config",
    "Intervention": "stf_jax.models.decoder",
    "fit_map": "stf_jax.transfer",
    "load_map": ("stf_jax.transfer.mapfile", "load_map_set"),
}
__all__ = [*_LAZY, "transfer", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
        return getattr(import_module(module), attr)
    if name == "transfer":  # the subpackage, callable as the function (see stf_jax/transfer/__init__.py)
        return import_module("stf_jax.transfer")
    raise AttributeError(f"module 'stf_jax' has no attribute {name!r}")
