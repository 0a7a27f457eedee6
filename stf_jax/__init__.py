"""stf_jax: extract, align and transfer steering vectors between language models in JAX/Flax.

The verbs (each documented once, on the function; imported lazily, so data-only tools such as
`python -m stf_jax.data` start without JAX), and the one vector type they pass around:
    load_model(name_or_path, dtype="float32")         -> Model (.config, .tokenizer, .hidden_states(...))
    train_vector(model, pairs, layers=-6, method="mean_diff", trait=None) -> SteeringVector
    extract(models, pairs, out, layers=-6, ...)       -> steering vectors per model and layer in a run directory
    fit_map(run_dir, source, target, method, layers, out) -> MapSet between two models' vector spaces
    transfer(vector_or_file, map_set)                 -> SteeringVector of the target model
    steer(model, vector, prompts, alpha=None)         -> (unsteered, steered completions, info)
    calibrate(model, vector, trait=None, layers=None) -> Calibration: layer and strength chosen, vector at strength 1
    report(run_dir)                                   -> (report.md, report.html) for an experiment directory
and load_map(path) -> MapSet (a saved map set or one map file). Models may be given loaded (a `Model`) or
by name to every verb. `SteeringVector` (`stf_jax.core.vector`): .load/.save (llama.cpp, repeng, safetensors),
arithmetic, conversions to and from repeng's and steering-vectors' objects.

`extract`, `transfer`, `steer` and `report` are also the subpackages behind them (`python -m stf_jax.<verb>`,
their modules); calling one calls the verb. Layers are named the same way everywhere (-6, 0.67, 10:20, all:
`stf_jax.core.layers`), as Hugging Face hidden-state indices (0 = embeddings, n_layers = last block).
"""

import sys
import types
from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "load_model": "stf_jax.models.loading",
    "Model": "stf_jax.models.model",
    "DecoderConfig": "stf_jax.models.config",
    "Intervention": "stf_jax.models.decoder",
    "fit_map": "stf_jax.transfer",
    "load_map": ("stf_jax.transfer.mapfile", "load_map_set"),
    "SteeringVector": "stf_jax.core.vector",
    "train_vector": "stf_jax.extract.vector",
    "calibrate": "stf_jax.steer.calibration",
}
_VERB_PACKAGES = ("extract", "transfer", "steer", "report")  # callable subpackages
__all__ = [*_LAZY, *_VERB_PACKAGES, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
        return getattr(import_module(module), attr)
    if name in _VERB_PACKAGES:
        return import_module(f"stf_jax.{name}")
    raise AttributeError(f"module 'stf_jax' has no attribute {name!r}")


def _lazy_attribute(package: str, names: dict[str, str], name: str):
    """A subpackage's `__getattr__`: `name` from the module `names` maps it to, else the submodule `name`."""
    if name in names:
        return getattr(import_module(f"{package}.{names[name]}"), name)
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        return import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def _callable_package(name: str, verb) -> None:
    """Make the (imported) package `name` callable as `verb`: it stays the package (`python -m`, its
    modules, `from stf_jax.steer import ...`) whichever way it was imported, and `inspect.signature` and
    `help` see the verb's."""
    import inspect

    module = sys.modules[name]
    module.__class__ = type(f"{verb.__name__.title()}Package", (types.ModuleType,),
                            {"__call__": staticmethod(verb), "__module__": name})
    module.__signature__ = inspect.signature(verb)


def _moved(old: str, new: str) -> None:
    """Keep the module name `old` importable after a move: warn once (DeprecationWarning) and make
    `old` the module `new` itself, so every name, private ones included, is what it was."""
    import warnings

    warnings.warn(f"{old} moved to {new}; import it from there (the old name will be removed)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = import_module(new)
