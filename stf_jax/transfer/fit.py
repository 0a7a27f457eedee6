"""Fit a map set from an extraction run: the maps a user keeps and applies to their own vectors.

Each layer pair is fitted twice with the same method and settings the protocol scores
(`align.maps`): once on a train split, to measure held-out quality (centered cosine beside the
`trait_mean` baseline, which knows each test pair's trait and nothing else), and once on every pair:
the deployed map. k (Procrustes) is chosen on the training split by the protocol's variance rule.

Layer pairs (`layers`):
  one layer (-6, 12, 0.67)  the same layer spec in both models (negatives from the end, relative depth);
  "depth"             every steerable target layer (2..n-1) from the source layer at the same relative
                      depth: covers multi-layer control vectors (llama.cpp, repeng);
  "sweep:PATH"        every steerable target layer from the source layer with the best validation
                      cosine in an alignment sweep's results.json (python -m stf_jax.align --layer-sweep).

Several runs (`fit_mixture_map_set`): affine maps fitted on a weighted mixture of sources (style pairs,
A/B behaviour items, dialogue turns, corpus pairs; `transfer.mixture`), deployed on the training rows.
Every map records its coverage basis (`transfer.coverage`), from the source rows it was fitted on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..align import maps
from ..align.adapters import AdapterConfig
from ..extract.rundir import (AlignInputError, ModelRef, load_vectors, make_trials, model_pair, pair_table,
                            zero_rows)
from ..align.pca import k_for_pair
from ..align.protocol import baseline_trials, map_trials
from ..data import dataset_hash
from ..extract.store import read_manifest
from ..options import check_options, option
from .coverage import coverage_basis, scatter
from .mapfile import LayerMap, MapSet, header_for
from .mixture import (LayerData, Source, data_record, fit_layer, log_quality, open_sources, source_layers,
                      stacked_vectors)


def steerable(layers: Sequence[int], n_layers: int) -> list[int]:
    """Block outputs a control vector can steer in llama.cpp: HF 2..n-1 (not block 0, not the final norm)."""
    return [lay for lay in layers if 2 <= lay <= n_layers - 1]


def layer_pairs(spec: str | int, ref_s: ModelRef, ref_t: ModelRef, stack: int | None = None) -> list[tuple]:
    """(source layer, target layer) pairs for a layer spec (module docstring); with `stack`, the source side of
    every pair is the same tuple of `stack` source layers spread over depth (a many-to-one map's inputs)."""
    if stack:
        layers = stack_layers(ref_s, stack)
        return [(layers, lt) for lt in dict.fromkeys(lt for _, lt in layer_pairs(spec, ref_s, ref_t))]
    if not (spec in ("depth", "all") or str(spec).startswith("sweep:")):  # one layer: -6, 12, 0.67 ...
        try:
            return [(ref_s.resolve_layer(spec), ref_t.resolve_layer(spec))]
        except AlignInputError as exc:
            raise AlignInputError(f"{exc} (or give 'depth' or 'sweep:RESULTS.json')") from None
    src = steerable(ref_s.layers, ref_s.n_layers)
    tgt = steerable(ref_t.layers, ref_t.n_layers)
    if not src or not tgt:
        raise AlignInputError(f"layers {spec!r}: no steerable layers (2..n-1) were extracted for "
                              f"{ref_s.name if not src else ref_t.name}; extract with layers= all")
    if spec in ("depth", "all"):
        return [(min(src, key=lambda ls: abs(ls / ref_s.n_layers - lt / ref_t.n_layers)), lt) for lt in tgt]
    return _from_sweep(Path(str(spec)[6:]), ref_s, ref_t, src, tgt)


def stack_layers(ref_s: ModelRef, n: int) -> tuple[int, ...]:
    """n steerable source layers evenly spread over depth (all of them when fewer were extracted)."""
    src = steerable(ref_s.layers, ref_s.n_layers)
    if len(src) < 2:
        raise AlignInputError(f"a many-to-one map reads several source layers; {ref_s.name} has {len(src)} steerable "
                              "layer(s) in this run: extract with layers= all")
    picks = np.unique(np.round(np.linspace(0, len(src) - 1, min(n, len(src)))).astype(int))
    return tuple(src[i] for i in picks)


def sae_fit_settings(sae: str | Path | None, ref_s: ModelRef, sae_k: int | None = None) -> dict[str, Any]:
    """s2l's settings from the source SAE (path, width, k: the SAE's own unless `sae_k`) and the layer it
    reads, checked against the run: the source model's width, a layer the run extracted."""
    if not sae:
        raise AlignInputError("method s2l carries vectors through the source model's SAE: give sae= (train one with "
                              "python -m stf_jax.sae train)")
    path = str(Path(sae).resolve())
    cfg, _ = maps.source_sae(path)  # read now, outside any trace (the fitters run under jit), and once
    if cfg.d_in != ref_s.d_model:
        raise AlignInputError(f"{sae}: this SAE reads {cfg.d_in}-wide states; {ref_s.name} has {ref_s.d_model}; give "
                              f"an SAE of {ref_s.name}" + (f" (it was trained on {cfg.model})" if cfg.model else ""))
    if cfg.model and cfg.model != ref_s.name:
        raise AlignInputError(f"{sae}: this SAE was trained on {cfg.model}, not {ref_s.name}; give an SAE of the "
                              "source model")
    if cfg.layer not in ref_s.layers:
        raise AlignInputError(f"{sae}: the SAE reads layer {cfg.layer}, which the run did not extract for "
                              f"{ref_s.name} (extracted: {list(ref_s.layers)})")
    k = sae_k or cfg.k
    if not 1 <= k <= cfg.d_sae:
        raise AlignInputError(f"sae_k= {k}: give 1 .. {cfg.d_sae} (the SAE's latents)")
    return {"sae": path, "sae_latents": cfg.d_sae, "sae_k": k, "layer": cfg.layer}


def method_pairs(method: str, layers: str | int, ref_s: ModelRef, ref_t: ModelRef, stack: int = 6,
                 sae: str | Path | None = None, sae_k: int | None = None) -> tuple[list[tuple], dict[str, Any]]:
    """(the layer pairs `method` fits, its SAE settings for FitSettings): `layer_pairs` of the spec; for a
    many-to-one method every pair's source is the stack; for s2l every target layer of the spec reads the SAE's
    layer (`sae_fit_settings`). One plan for the fits, the mixture fits and the norms they record."""
    if method not in maps.SAE_METHODS:
        return layer_pairs(layers, ref_s, ref_t, stack if method in maps.STACKED_METHODS else None), {}
    settings = sae_fit_settings(sae, ref_s, sae_k)
    sae_layer = settings.pop("layer")
    return [(sae_layer, lt) for lt in dict.fromkeys(lt for _, lt in layer_pairs(layers, ref_s, ref_t))], settings


def anchor_layer(ls: int | tuple[int, ...], lt: int, n_s: int, n_t: int) -> int:
    """The one source layer a map's header names (its typical |h| sets a carried vector's strength): for a
    stack, the member at the target layer's relative depth."""
    return min(source_layers(ls), key=lambda x: abs(x / n_s - lt / n_t))


def _from_sweep(path: Path, ref_s: ModelRef, ref_t: ModelRef, src: list[int], tgt: list[int]):
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlignInputError(f"{path}: cannot read the sweep results ({exc})") from None
    sweep = res.get("sweep") if isinstance(res, dict) else None
    pairs = sweep.get("pairs") if isinstance(sweep, dict) else None
    rec = pairs.get(f"{ref_s.name}->{ref_t.name}") if isinstance(pairs, dict) else None
    if rec is None:
        raise AlignInputError(f"{path}: no layer sweep for {ref_s.name}->{ref_t.name} "
                              "(python -m stf_jax.align RUN --layer-sweep)")
    ls_all, lt_all, score = _sweep_table(rec, path)
    out = []
    for lt in (t for t in tgt if t in lt_all):
        cands = [ls for ls in src if ls in ls_all]
        col = np.array([score[ls_all.index(ls), lt_all.index(lt)] for ls in cands])
        if cands and np.isfinite(col).any():  # a target layer the sweep could not score is left out
            out.append((cands[int(np.nanargmax(col))], lt))
    if not out:
        raise AlignInputError(f"{path}: the sweep scores none of {ref_t.name}'s steerable layers (missing or NaN)")
    return out


def _sweep_table(rec, path: Path) -> tuple[list[int], list[int], np.ndarray]:
    """(source layers, target layers, scores [S, T]) of one sweep record, checked: lists of integer layers
    and a numeric matrix of that shape."""
    try:
        ls_all, lt_all = [int(x) for x in rec["layers_source"]], [int(x) for x in rec["layers_target"]]
        score = np.asarray(rec.get("validation_centered", rec["test_centered"]), np.float64)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AlignInputError(f"{path}: not a layer-sweep record ({type(exc).__name__}: {exc}); rerun "
                              "python -m stf_jax.align RUN --layer-sweep") from None
    if score.shape != (len(ls_all), len(lt_all)):
        raise AlignInputError(f"{path}: sweep scores of shape {score.shape} for {len(ls_all)} x {len(lt_all)} layers")
    return ls_all, lt_all, score


def _model_info(ref: ModelRef, manifest: dict) -> dict[str, Any]:
    entry = next(e for e in manifest["models"] if e["name"] == ref.name)
    return {"name": ref.name, "model_type": entry.get("model_type", entry.get("family")),
            "config_hash": entry.get("config_hash"), "d_model": ref.d_model, "n_layers": ref.n_layers}


@dataclasses.dataclass(frozen=True)
class FitRanges:
    """The ranges of the fit settings, declared once (`options.option`) for `fit_map`, `fit_map_set` and
    `fit_mixture_map_set`, flags and calls alike (a NaN ridge once fitted an all-NaN map set; k = -3 became 1)."""

    ridge: float | None = option(None, ge=0)
    k: int | None = option(None, ge=1)
    stack: int | None = option(None, ge=2)
    variance: float | None = option(None, gt=0, le=1)
    test_fraction: float | None = option(None, gt=0, lt=1)
    val_fraction: float | None = option(None, ge=0, lt=1)

    def __post_init__(self):
        check_options(self)


def check_settings(settings: dict) -> None:
    """Fit settings in range before any work (FitRanges); OptionError names the argument."""
    FitRanges(**{f.name: settings[f.name] for f in dataclasses.fields(FitRanges) if f.name in settings})


def _model_infos(ref_s: ModelRef, ref_t: ModelRef, manifest: dict, model_types: dict[str, str] | None):
    """The map headers' source and target model records (model_type overridden by `model_types`)."""
    infos = (_model_info(ref_s, manifest), _model_info(ref_t, manifest))
    for info in infos:
        info["model_type"] = (model_types or {}).get(info["name"], info["model_type"])
    return infos


def _layer_header(method: str, settings: maps.FitSettings, infos, ls: int | tuple[int, ...], lt: int, norms,
                  data: dict, quality: dict) -> dict[str, Any]:
    """One map's header: the model records with this layer pair and its typical |h| (`norms`); a stack of
    source layers is recorded as `layers`, its anchor (`anchor_layer`) as `layer`."""
    anchor = anchor_layer(ls, lt, infos[0]["n_layers"], infos[1]["n_layers"])
    sides = [{**info, "layer": lay, "typical_norm": (norms or {}).get(info["name"], {}).get(lay)}
             for info, lay in zip(infos, (anchor, lt))]
    if isinstance(ls, tuple):
        sides[0]["layers"] = list(ls)
    return header_for(method, settings, *sides, data, quality)


def fit_map_set(run_dir: str | Path, source: str, target: str, method: str = "affine", layers: str | int = -6, *,
                k: int | None = None, variance: float = 0.95, ridge: float | None = None, rotation_only: bool = False,
                adapter: AdapterConfig = AdapterConfig(), seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.1, norms: dict[str, dict[int, float]] | None = None,
                model_types: dict[str, str] | None = None, stack: int = 6, sae: str | Path | None = None,
                sae_k: int | None = None, log: Callable[[str], None] = print) -> MapSet:
    """Fit `method` maps source → target at each layer pair of `layers` (module docstring). A many-to-one
    method (`maps.STACKED_METHODS`) reads `stack` source layers spread over depth for every target layer;
    s2l reads the source model's SAE `sae` at its layer (every target layer of `layers` from that one).

    norms: {model name: {HF layer: typical |h|}} recorded in each map (what `transfer` uses to keep a
    vector's strength relative to the residual stream); see `typical_norms`. model_types: {model name: HF
    model_type} (the control-vector model hint; default: the run's family name)."""
    ridge = maps.default_ridge(method, ridge)
    check_settings({"ridge": ridge, "k": k, "variance": variance, "test_fraction": test_fraction,
                    "val_fraction": val_fraction, "stack": stack})
    ref_s, ref_t = model_pair(run_dir, source, target)
    if source == target:
        raise AlignInputError("source and target are the same model")
    if method not in maps.MAP_SET_METHODS:
        raise AlignInputError(f"method {method} is fitted on corpus token states; transfer fit takes methods "
                              f"fitted on paired vectors: {list(maps.MAP_SET_METHODS)}")
    pairs, sae_settings = method_pairs(method, layers, ref_s, ref_t, stack, sae, sae_k)
    table, orders = pair_table([ref_s, ref_t])
    infos = _model_infos(ref_s, ref_t, read_manifest(run_dir), model_types)
    data = {"dataset_hash": dataset_hash(table.pairs), "n_pairs": table.n, "traits": list(table.trait_names),
            "run": str(run_dir)}
    out = {}
    for ls, lt in pairs:
        x_s = stacked_vectors(ref_s, source_layers(ls), orders[ref_s.run_dir])
        x_t = load_vectors(ref_t, lt, orders[ref_t.run_dir])
        excluded = zero_rows(x_s) | zero_rows(x_t)
        trials = make_trials(table, 1, seed, test_fraction, val_fraction, exclude=excluded)
        k_used = k_for_pair(x_s, x_t, trials.train[0], k, variance)
        settings = maps.FitSettings(k=k_used, ridge=ridge, rotation_only=rotation_only, adapter=adapter,
                                    **sae_settings)
        quality = _held_out_quality(method, settings, x_s, x_t, trials, table)
        usable = (~excluded).astype(np.float32)
        m, _ = maps.fit_map(method, x_s, x_t, usable, trials.val[0], settings=settings)
        header = _layer_header(method, settings, infos, ls, lt, norms, {**data, "n_used": int(usable.sum())},
                               quality)
        basis, rest = coverage_basis(scatter(x_s[~excluded]))
        out[lt] = LayerMap(m, header, basis, rest)
        log(f"{source} L{_layers_text(ls)} -> {target} L{lt}: {method} held-out centered cosine "
            f"{quality['centered_cosine']:.3f} "
            f"(trait_mean {quality['trait_mean_centered']:.3f}), k={k_used}, {int(usable.sum())} pairs")
    return MapSet(out)


def fit_mixture_map_set(sources: Sequence[Source], source: str, target: str, layers: str | int = "depth", *,
                        method: str = "affine", ridge: float | None = None, coverage_axes: int | None = None, seed: int = 0,
                        test_fraction: float = 0.2, norms: dict[str, dict[int, float]] | None = None,
                        model_types: dict[str, str] | None = None, stack: int = 6, sae: str | Path | None = None,
                        sae_k: int | None = None, log: Callable[[str], None] = print) -> MapSet:
    """Affine maps source → target at each layer pair of `layers`, fitted on the weighted mixture of
    `sources` (module docstring of `transfer.mixture`); quality is per source on its held-out rows. many_to_one
    and s2l as in `fit_map_set` (s2l: the affine part fitted on the rows' SAE coefficients)."""
    if source == target:
        raise AlignInputError("source and target are the same model")
    ridge = maps.default_ridge(method, ridge)
    check_settings({"ridge": ridge, "test_fraction": test_fraction, "stack": stack})
    runs = open_sources(sources, source, target, test_fraction, seed)
    ref_s, ref_t = runs[0].ref_s, runs[0].ref_t
    infos = _model_infos(ref_s, ref_t, read_manifest(runs[0].source.run), model_types)
    data = data_record(runs, test_fraction, seed)
    pairs, sae_settings = method_pairs(method, layers, ref_s, ref_t, stack, sae, sae_k)
    settings = maps.FitSettings(ridge=ridge, **sae_settings)
    out = {}
    for ls, lt in pairs:
        layer = LayerData.load(runs, ls, lt)
        if sae_settings:
            m, (basis, rest), by_source = _fit_s2l_layer(layer, settings, ridge, coverage_axes)
        else:
            m, (basis, rest), by_source = fit_layer(layer, ridge, coverage_axes)
        quality = {"by_source": by_source, "centered_cosine": None, "trait_mean_centered": None}
        header = _layer_header(method, settings, infos, ls, lt, norms, {**data, "n_used": layer.n_train_rows()},
                               quality)
        out[lt] = LayerMap(m, header, basis, rest)
        log_quality(source, target, method, _layers_text(ls), lt, by_source, log)
    return MapSet(out)


def _fit_s2l_layer(layer: LayerData, settings: maps.FitSettings, ridge: float, coverage_axes: int | None):
    """fit_layer on the rows' SAE coefficients (`maps.sparse_code`), wrapped as an S2LMap; the coverage
    basis stays in the source's state space, where the vectors it judges live."""
    if layer.streamed:
        raise AlignInputError("s2l is fitted on pair runs; a corpus run's token states stream as moments of the "
                              "states, not of their SAE coefficients")
    w_enc = jnp.asarray(maps.source_sae(settings.sae)[1])
    coded = dataclasses.replace(layer, x_s=[np.asarray(maps.sparse_code(jnp.asarray(x), w_enc, settings.sae_k))
                                            for x in layer.x_s])
    m, _, by_source = fit_layer(coded, ridge, coverage_axes)
    return maps.S2LMap(w_enc, m, settings.sae_k), coverage_basis(layer.total().scatter(), coverage_axes), by_source


def _layers_text(ls: int | tuple[int, ...]) -> str:
    return "+".join(map(str, source_layers(ls)))


def _held_out_quality(method: str, settings: maps.FitSettings, x_s, x_t, trials, table) -> dict[str, Any]:
    """One split: the map fitted on train, scored on test, beside the trait_mean baseline."""
    x_s, x_t = jnp.asarray(x_s), jnp.asarray(x_t)
    onehot = jnp.asarray(table.onehot())
    tr, va, te = (jnp.asarray(getattr(trials, s)) for s in ("train", "val", "test"))
    keys = jax.random.PRNGKey(settings.adapter.seed)[None]
    res, _, _ = map_trials(method, settings, x_s, x_t, tr, va, te, jnp.asarray(trials.perms[:, :1]), onehot, keys)
    base = baseline_trials(x_t, tr, te, onehot)["trait_mean"]
    return {"centered_cosine": float(res["test_centered"][0, 0]), "raw_cosine": float(res["test"][0, 0]),
            "trait_mean_centered": float(base["test_centered"][0]), "trait_mean_raw": float(base["test"][0]),
            "split": {"seed": int(trials.seeds[0]), "n_train": int(trials.train.sum()),
                      "n_test": int(trials.test.sum())}}
