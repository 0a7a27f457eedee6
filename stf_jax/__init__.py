"""stf_jax: extract, align and transfer steering vectors between language models in JAX/Flax.

Public API: `load_model(name_or_path, dtype="float32")` -> Model with `.config`, `.tokenizer`
and `.hidden_states(input_ids, attention_mask, layers)`. Imported lazily, so data-only tools
(`python -m stf_jax.data`) start without loading JAX.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "load_model": "stf_jax.models.loading",
    "Model": "stf_jax.models.model",
    "DecoderConfig": "stf_jax.models.config",
    "Intervention": "stf_jax.models.decoder",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stf_jax' has no attribute {name!r}")
