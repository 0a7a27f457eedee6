"""Transfer your own steering vectors to another model through saved maps.

    import stf_jax
    maps = stf_jax.fit_map("runs/shipped_all", source="smollm2-135m", target="gemma3-270m",
                           method="affine", layers="depth", out="maps/smollm2__gemma3")
    maps = stf_jax.load_map("maps/smollm2__gemma3")                  # a map set (or one map file)
    carried = stf_jax.transfer("formality.gguf", maps)                # llama.cpp / repeng / stf_jax file
    carried.directions                                                 # {target HF layer: [d_t]}

    carried = stf_jax.transfer("sycophancy.gguf", "shipped:smollm2-135m->gemma3-270m")  # shipped general maps
    carried.coverage                                                   # {target layer: 0..1}
    maps = stf_jax.fit_map(["runs/styles", "runs/ab", "runs/corpus"], "smollm2-135m", "gemma3-270m",
                           layers="depth", weights=[1, 1, 0.5])       # a mixture of kinds of data

CLI: `python -m stf_jax.transfer fit|apply|kinds ...` (see --help).
Modules: mapfile (map files, map sets, shipped sets by name), fit (fitting from extraction runs, held-out
quality, typical residual norms), mixture (sources, weights, moments, corpus runs), coverage (how far a
map can be trusted for a vector), apply (carrying vectors, strength convention, files and libraries),
kinds (evaluation by vector kind).
"""

from __future__ import annotations

import functools
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..core.vector import SteeringVector
from .library import TransferInputError

if TYPE_CHECKING:
    from .mapfile import MapSet

# imported on first use (PEP 562), so that `python -m stf_jax.transfer apply` reads and checks its inputs
# before JAX is imported: a bad input is refused in a fraction of a second
_LAZY = {"STRENGTHS": "apply", "Carried": "apply", "CoverageError": "apply", "carry": "apply", "carry_many": "apply",
         "transfer_files": "apply", "LayerMap": "mapfile", "MapFileError": "mapfile", "MapSet": "mapfile",
         "load_layer_map": "mapfile", "load_map_set": "mapfile", "save_map": "mapfile"}

__all__ = ["STRENGTHS", "Carried", "CoverageError", "LayerMap", "MapFileError", "MapSet", "TransferInputError", "carry",
           "carry_many", "fit_map", "load_layer_map", "load_map", "load_map_set", "save_map", "transfer",
           "transfer_files"]


def fit_map(run_dir: str | Path | Sequence[str | Path], source, target, method: str = "affine",
            layers: str | int = -6, out: str | Path | None = None, norms: bool | dict = True, norm_texts: int = 64,
            log=print, weights: Sequence[float] | None = None, exclude_traits: Sequence[str] = (),
            dtype: str = "float32", overwrite: bool = False, **settings) -> MapSet:
    """Fit a map set from an extraction run (see `fit.fit_map_set` for the settings); with `out`, save it.

    Several runs (a list), or `weights`: affine maps on the weighted mixture of the runs' pairs
    (`fit.fit_mixture_map_set`; each run a source: style pairs, A/B items, dialogues, corpus pairs), with
    `exclude_traits` left out of every source. norms=True loads both models and measures each layer's
    typical |h| on `norm_texts` of the first run's texts (needed for the default relative strength of
    `transfer`); False skips it; a dict gives them. `out` holding a map set already is refused unless
    overwrite=True; the directory is locked while it is written (one writer). source, target: model names as
    the run records them, or loaded Models (their names; their forward measures the norms, nothing is loaded)."""
    from ..locks import DirLock
    from .fit import check_settings

    check_settings(settings)  # before the models are loaded for norms
    held = {m.name: m for m in (source, target) if hasattr(m, "params")}
    source, target = (m.name if hasattr(m, "params") else m for m in (source, target))
    fit = functools.partial(_fit, run_dir, source, target, method, layers, norms, norm_texts, log, weights,
                            exclude_traits, settings, held)
    if out is None:
        return fit()
    out = Path(out)
    _check_out(out, overwrite)
    created = not out.exists()
    try:
        with DirLock(out, "transfer fit"):
            map_set = fit()
            map_set.save(out, dtype, replace=overwrite)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed fit leaves no empty directory behind
        raise
    return map_set


def _fit(run_dir, source: str, target: str, method: str, layers, norms, norm_texts: int, log, weights,
         exclude_traits, settings: dict, held: dict) -> MapSet:
    """`fit_map` without the output directory: one run, or a mixture of runs."""
    from ..align.maps import METHODS
    from .fit import fit_map_set, fit_mixture_map_set
    from .mixture import Source

    runs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    mixture = len(runs) > 1 or weights is not None or bool(exclude_traits)
    if mixture and not (method in METHODS and METHODS[method].moments):
        raise TransferInputError(f"method {method!r}: a mixture of sources is fitted with a method solved from the "
                                 f"rows' moments: {[n for n, m in METHODS.items() if m.moments]}")
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if len(weights) != len(runs):
        raise TransferInputError(f"{len(weights)} weight(s) for {len(runs)} run(s): give one weight per run")
    model_types = None
    if norms is True:
        norms, model_types = _measure_norms(runs[0], source, target, method, layers, norm_texts, held, settings)
    if mixture:
        sources = [Source(Path(r), float(w), tuple(exclude_traits)) for r, w in zip(runs, weights)]
        map_set = fit_mixture_map_set(sources, source, target, layers, method=method, norms=norms or None,
                                      model_types=model_types, log=log, **settings)
    else:
        map_set = fit_map_set(runs[0], source, target, method, layers, norms=norms or None, model_types=model_types,
                              log=log, **settings)
    return map_set


def _check_out(out: Path, overwrite: bool) -> None:
    """The map-set directory can be written, and holds no map set unless overwrite: checked before fitting."""
    from .mapfile import SET_FILE

    if out.exists() and not out.is_dir():
        raise TransferInputError(f"{out} exists and is not a directory; give a directory for the map set")
    if (out / SET_FILE).exists() and not overwrite:
        raise TransferInputError(f"{out} already holds a map set; give another out=, or pass overwrite= to replace it")


def _measure_norms(run_dir, source: str, target: str, method: str, layers, n_texts: int, held: dict, settings: dict):
    """({model: {layer: typical |h|}}, {model: HF model_type}) from the loaded models, at the layers the maps'
    headers name (`fit.method_pairs`, a stack by its anchor)."""
    from ..extract.rundir import find_models, pair_table
    from ..models.loading import load_model
    from ..core.norms import typical_norms
    from .fit import anchor_layer, method_pairs

    refs = find_models([run_dir])
    if source not in refs or target not in refs:
        return {}, {}
    pairs, _ = method_pairs(method, layers, refs[source], refs[target], settings.get("stack", 6), settings.get("sae"),
                            settings.get("sae_k"))
    pairs = [(anchor_layer(ls, lt, refs[source].n_layers, refs[target].n_layers), lt) for ls, lt in pairs]
    if not pairs:
        return {}, {}
    table, _ = pair_table([refs[source], refs[target]])
    rng = np.random.default_rng(0)
    chosen = rng.choice(table.n, size=min(table.n, max(1, n_texts // 2)), replace=False)
    texts = [t for i in sorted(chosen) for t in (table.pairs[i].positive, table.pairs[i].negative)]
    out, types = {}, {}
    for name, lays in ((source, [ls for ls, _ in pairs]), (target, [lt for _, lt in pairs])):
        model = held.get(name) or load_model(name)
        out[name], types[name] = typical_norms(model, texts, lays), model.config.model_type
    return out, types


def transfer(vector, map_set: MapSet | str | Path, layer: int | None = None, strength: str = "relative",
             strict: bool = False, force: bool = False) -> SteeringVector:
    """Carry a vector to the map set's target model -> a SteeringVector of the target. vector: a
    SteeringVector, a file path (.gguf/.safetensors control vector, .npy with `layer`), a {source HF layer:
    vector} dict, or an array with `layer`. `map_set`: a MapSet, a
    directory, or a shipped set by name ("shipped:smollm2-135m->gemma3-270m"). The result's `coverage`
    says per layer how far the map can be trusted for this vector; strict=True refuses low coverage. A vector
    that names another model than the map set's source (its name or model hint) is refused unless force=True."""
    from .apply import carry
    from .mapfile import MapSet, load_map_set

    if not isinstance(map_set, MapSet):
        map_set = load_map_set(map_set)
    if isinstance(vector, (str, Path)):
        vector = SteeringVector.load(vector, layer)
        layer = None
    return carry(map_set, vector, layer, strength, strict, force)


def __getattr__(name: str):
    from .. import _lazy_attribute

    # load_map: as stf_jax.load_map, a map set (a directory, a shipped name, or one map file)
    return _lazy_attribute(__name__, _LAZY, "load_map_set" if name == "load_map" else name)


class _CallableModule(types.ModuleType):
    """`stf_jax.transfer` is both this package (`python -m stf_jax.transfer`, its modules) and the verb:
    `stf_jax.transfer(vector, maps)` calls `transfer` above, whichever way the package was imported."""

    def __call__(self, vector, map_set, layer: int | None = None, strength: str = "relative",
                 strict: bool = False, force: bool = False) -> SteeringVector:
        return transfer(vector, map_set, layer, strength, strict, force)


sys.modules[__name__].__class__ = _CallableModule
