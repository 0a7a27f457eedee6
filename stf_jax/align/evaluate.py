"""The full protocol over run directories: directed model pairs, trials, methods, baselines, scrambling,
layer sweep -> one JSON-ready results dict (see report.py for results.json / results.md).

    results = evaluate(["runs/x"], EvalConfig(methods=("procrustes", "trait_mean")), layer=-6)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import __version__
from ..data import dataset_hash
from . import adapters as adapters_lib
from . import maps
from .affine import paired_token_states
from ..extract.rundir import (SCRAMBLES, AlignInputError, ModelRef, PairTable, Trials, array_hash, check_k, describe_inputs,
                     find_models, load_vectors, make_trials, pair_table, zero_rows)
from .metrics import cosines, masked_mean, summarize
from .ops import map_batched
from .pca import PCA, k_for_variance
from .protocol import (Projected, baseline_trials, fit_pcas, fit_pcas_by_complement, fitted_map_trials,
                       held_out_rows, layer_sweep, map_trials, procrustes_stats_both_ways, procrustes_trials,
                       project_trials, spectra, train_rows)
from ..extract.store import pair_tag
from ..options import check_options, option
from ..safe_paths import inside

ADAPTERS = adapters_lib.KINDS
LABEL_BASELINES = ("mean_target", "trait_mean")  # no map from the source: scored by protocol.baseline_trials
BASELINES = ("identity", *LABEL_BASELINES)      # identity is also the zero-shot map of the table
METHODS = (*maps.TRANSFER_METHODS, *BASELINES)
ALL_METHODS = (*(n for n in maps.METHODS if n not in maps.STACKED_METHODS + maps.SAE_METHODS),  # one layer pair,
               *LABEL_BASELINES)  # no SAE


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Protocol settings (recorded in results.json).

    Attributes:
      methods: any of ALL_METHODS; "affine_tokens" needs `token_run` in evaluate().
      k / variance: PCA components, or the smallest k explaining `variance` of every model's training
        vectors (max over models and trials, so all share one k). Exactly one is used; k wins.
      trials, seed: trial i splits with seed + i. test_fraction: held-out share; val_fraction: share of the
        training split held out to early-stop adapters and to choose the layer pair of a sweep.
      rotation_only: Procrustes restricted to det(R) = +1.
      ridge: relative ridge of the affine map (0: least squares).
      scramble: methods also fitted on within-trait and cross-trait shuffled training pairs.
      adapter: training settings shared by the adapters (kind is set per method).
      array: which stored array to align ("vectors": unit steering vectors; "diff": raw differences).
      solver: PCA solver ("gram" or "svd"). batch_size: problems per vmapped chunk (None: one vmap).
      token_pairing: how affine_tokens pairs corpus rows ("token" or "text_mean").
    """

    methods: tuple[str, ...] = METHODS
    k: int | None = option(None, ge=1)
    variance: float | None = option(0.95, gt=0, le=1)
    trials: int = option(5, ge=1)
    seed: int = option(0, ge=0)
    test_fraction: float = option(0.2, gt=0, lt=1)
    val_fraction: float = option(0.1, ge=0, lt=1)
    rotation_only: bool = False
    ridge: float = option(0.1, ge=0)
    scramble: tuple[str, ...] = ("procrustes", "affine")
    adapter: adapters_lib.AdapterConfig = adapters_lib.AdapterConfig()
    array: Literal["vectors", "diff"] = "vectors"
    solver: Literal["gram", "svd"] = "gram"
    batch_size: int | None = option(None, ge=1)
    token_pairing: Literal["token", "text_mean"] = "text_mean"

    def __post_init__(self):
        check_options(self)
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise AlignInputError(f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)}")
        if self.k is None and self.variance is None:
            raise AlignInputError("give k or a variance fraction")
        bad = sorted(m for m in self.scramble if m not in maps.METHODS or not maps.METHODS[m].scramble)
        if bad:
            raise AlignInputError(f"scrambling is defined for methods fitted on paired vectors, not {bad}")

    def fit_settings(self, k: int | None) -> maps.FitSettings:
        """The settings every map of this protocol is fitted with (k: the resolved PCA size)."""
        return maps.FitSettings(k=k or 0, ridge=self.ridge, rotation_only=self.rotation_only, adapter=self.adapter)


# ---------------------------------------------------------------- helpers


def _stats(values: np.ndarray) -> dict[str, Any]:
    """[T] -> mean, std (ddof=1 across trials; 0 for one trial), per-trial values."""
    v = np.asarray(values, np.float64)
    ok = v[np.isfinite(v)]
    mean = float(ok.mean()) if ok.size else float("nan")
    std = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
    return {"mean": mean, "std": std, "trials": [float(x) for x in v]}


def _summarize_method(m: dict[str, Any], traits: Sequence[str]) -> dict[str, Any]:
    """Per-trial arrays ([T], per-trait [T, C]) -> JSON-ready summary."""
    m = jax.tree.map(np.asarray, m)
    out = {key: _stats(m[key]) for key in ("test", "train", "test_centered", "train_centered")}
    out["gap"] = _stats(m["train"] - m["test"])
    out["gap_centered"] = _stats(m["train_centered"] - m["test_centered"])
    for key in ("per_trait_test", "per_trait_test_centered"):
        out[key] = {t: _stats(m[key][:, i]) for i, t in enumerate(traits)}
    if "scale" in m:
        out["scale"] = _stats(m["scale"])
    return out


def _pick(tree, index):
    return jax.tree.map(lambda a: a[(slice(None), index)], tree)


@dataclasses.dataclass
class _Device:
    """Trial arrays on device."""

    train: jax.Array
    test: jax.Array
    val: jax.Array
    fit: jax.Array
    perms: jax.Array
    onehot: jax.Array
    rows: Any

    @classmethod
    def from_trials(cls, trials: Trials, table: PairTable) -> "_Device":
        return cls(jnp.asarray(trials.train), jnp.asarray(trials.test), jnp.asarray(trials.val),
                   jnp.asarray(trials.fit), jnp.asarray(trials.perms), jnp.asarray(table.onehot()),
                   train_rows(trials.train))


def _k_from_spectra(specs: Sequence[tuple[np.ndarray, np.ndarray]], fraction: float) -> int:
    """Max over models (and trials) of the smallest k explaining `fraction` of the variance."""
    ks = [k_for_variance(v[t], tot[t], fraction) for v, tot in specs for t in range(v.shape[0])]
    return max(ks)


# ---------------------------------------------------------------- one directed pair


def evaluate_direction(x_s: np.ndarray, x_t: np.ndarray, pca_s: PCA | None, pca_t: PCA | None, dev: _Device,
                       table: PairTable, cfg: EvalConfig, token_maps: dict | None = None, k: int | None = None,
                       proper: tuple[dict, jax.Array] | None = None) -> tuple[dict, dict, dict]:
    """All methods of cfg for one directed pair at fixed layers, each scored the way its table entry says.

    pca_s, pca_t: per-trial PCAs (for the k-space Procrustes scorer); token_maps: {method: map} for
    methods fitted on corpus token states; proper: the k-space Procrustes of the proper pairing already
    computed (metrics, scale: leading [T]), from the fit of the opposite direction (`_procrustes_both_ways`).
    Returns (methods: name -> summary, scrambling: method -> pairing -> summary, trained: method ->
    (maps, info) with leading trial axis, for saving)."""
    traits = table.trait_names
    x_s, x_t = jnp.asarray(x_s), jnp.asarray(x_t)
    settings = cfg.fit_settings(k)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(cfg.adapter.seed + np.arange(cfg.trials)))
    methods: dict[str, Any] = {}
    scrambling: dict[str, Any] = {}
    trained: dict[str, Any] = {}
    for name in cfg.methods:
        if name in LABEL_BASELINES:
            continue
        spec = maps.METHODS[name]
        perms = dev.perms if name in cfg.scramble else dev.perms[:, :1]
        info = None
        if spec.fits_on == "token_states":
            if not token_maps or name not in token_maps:
                raise AlignInputError(f"method {name} needs a corpus run of both models (token_run)")
            res = fitted_map_trials(token_maps[name], x_s, x_t, dev.train, dev.test, dev.onehot)
            methods[name] = _summarize_method(res, traits)
            continue
        if spec.scorer == "kspace":  # Procrustes scored in PCA coordinates (protocol docstring): same numbers
            res, scale = _kspace_trials(x_s, x_t, pca_s, pca_t, dev, perms, cfg, proper)
            res["scale"] = scale
        else:
            res, fitted, info = map_trials(name, settings, x_s, x_t, dev.train, dev.val, dev.test, perms, dev.onehot,
                                           keys, batch_size=cfg.batch_size)
            if "scale" in info:
                res["scale"] = info["scale"]
            if "steps" in info:
                trained[name] = (jax.tree.map(lambda a: a[:, 0], fitted), jax.tree.map(lambda a: a[:, 0], info))
        methods[name] = _summarize_method(_pick(res, 0), traits)
        if info is not None and "steps" in info:
            methods[name]["steps"] = [int(s) for s in np.asarray(info["steps"][:, 0])]
        if perms.shape[1] == len(SCRAMBLES):
            scrambling[name] = {p: _summarize_method(_pick(res, j), traits) for j, p in enumerate(SCRAMBLES)}
    wanted = [b for b in LABEL_BASELINES if b in cfg.methods]
    if wanted:
        res = baseline_trials(x_t, dev.train, dev.test, dev.onehot)
        for name in wanted:
            methods[name] = _summarize_method(res[name], traits)
    return methods, scrambling, trained


def _kspace_trials(x_s, x_t, pca_s: PCA, pca_t: PCA, dev: _Device, perms: jax.Array, cfg: EvalConfig,
                   proper: tuple[dict, jax.Array] | None) -> tuple[dict, jax.Array]:
    """Procrustes in PCA coordinates for every trial and pairing of `perms` (metrics, scale: leading [T, S]).
    With `proper` (the proper pairing, perms[:, 0], from the opposite direction's fit) only the scrambled
    pairings are fitted here: their permutations of the source rows are not the transposed problem."""
    if proper is not None and perms.shape[1] == 1:
        return jax.tree.map(lambda a: a[:, None], proper)
    todo = perms if proper is None else perms[:, 1:]
    res = procrustes_trials(project_trials(pca_s, x_s), project_trials(pca_t, x_t), dev.train, dev.test, todo,
                            dev.onehot, rotation_only=cfg.rotation_only, batch_size=cfg.batch_size)
    if proper is None:
        return res
    return jax.tree.map(lambda p, r: jnp.concatenate([p[:, None], r], 1), proper, res)


@partial(jax.jit, static_argnames=("rotation_only", "batch_size"))
def _procrustes_trials_both_ways(a: Projected, b: Projected, w_train: jax.Array, w_test: jax.Array,
                                 onehot: jax.Array, rotation_only: bool = False, batch_size: int | None = None):
    """Proper-pairing Procrustes of a → b and b → a per trial from one fit (protocol.procrustes_stats_both_ways:
    R_ba = R_abᵀ, s_ba = tr Σ / ‖z_b‖²) -> ((metrics, scale) a → b, (metrics, scale) b → a), leading [T]."""

    def trial(args):
        pa, pb, wtr, wte = args
        return tuple((summarize(cosines(st), wtr, wte, onehot), scale)
                     for st, scale in procrustes_stats_both_ways(pa, pb, wtr, rotation_only))

    return map_batched(trial, (a, b, w_train, w_test), batch_size)


def _procrustes_both_ways(vectors: dict, pcas: dict, chosen: dict, directions: list[tuple[str, str]], dev: _Device,
                          cfg: EvalConfig) -> dict:
    """The k-space Procrustes of the proper pairing for both directions of each model pair, one fit per pair
    and trial: (source, target) -> (metrics, scale), leading [T], for `evaluate_direction(proper=...)`.

    Only where both directions are evaluated at mirrored layers (a sweep may pick (i, j) one way and not
    (j, i) the other); the rest are fitted per direction as before."""
    if not pcas or not any(maps.METHODS[m].scorer == "kspace" for m in cfg.methods if m in maps.METHODS):
        return {}
    out = {}
    for s_name, t_name in directions:
        ls, lt = chosen[(s_name, t_name)]
        if (s_name, t_name) in out or chosen.get((t_name, s_name)) != (lt, ls):
            continue
        a, b = ((project_trials(pcas[key], jnp.asarray(vectors[key]))) for key in ((s_name, ls), (t_name, lt)))
        out[(s_name, t_name)], out[(t_name, s_name)] = _procrustes_trials_both_ways(
            a, b, dev.train, dev.test, dev.onehot, rotation_only=cfg.rotation_only, batch_size=cfg.batch_size)
    return out


# ---------------------------------------------------------------- the whole protocol


def _directions(refs: dict[str, ModelRef], source: str | None, target: str | None) -> list[tuple[str, str]]:
    if (source is None) != (target is None):
        raise AlignInputError("give both source= and target=, or neither (all directed pairs)")
    if source is not None:
        for name in (source, target):
            if name not in refs:
                raise AlignInputError(f"model {name!r} is not in the run(s); they hold {sorted(refs)}")
        if source == target:
            raise AlignInputError("source and target are the same model")
        return [(source, target)]
    if len(refs) < 2:
        raise AlignInputError(f"need at least two models; the run(s) hold {sorted(refs)}")
    return list(itertools.permutations(sorted(refs), 2))


def _resolve_k(cfg: EvalConfig, specs: list[tuple[np.ndarray, np.ndarray]] | None, n_fit: int,
               widths: dict[str, int]) -> int:
    """cfg.k (checked), or the variance rule over `specs`, capped by the training set and the widths."""
    if cfg.k is not None:
        check_k(cfg.k, n_fit, widths)
        return cfg.k
    return min(_k_from_spectra(specs, cfg.variance), n_fit - 1, *widths.values())


def _layer_stacks(names: list[str], refs: dict[str, ModelRef], load, hashes: dict[str, str], log
                  ) -> tuple[dict, dict, dict, dict]:
    """Every swept layer of each model stacked on device, with a mask of its usable (nonzero) rows.

    Returns (layers, stacks [L, n, d], valid [L, n], zero-vector counts per layer); hashes gains each array."""
    stacks, valid, layers, zeros = {}, {}, {}, {}
    for name in names:
        layers[name] = list(refs[name].layers)
        arrays = [load(name, lay) for lay in layers[name]]
        for lay, a in zip(layers[name], arrays):
            hashes[f"{name}@{lay}"] = array_hash(a)
        usable = np.stack([~zero_rows(a) for a in arrays]).astype(np.float32)  # [L, n]
        zeros[name] = {str(lay): int((1 - u).sum()) for lay, u in zip(layers[name], usable) if u.min() == 0}
        stacks[name], valid[name] = jnp.asarray(np.stack(arrays)), jnp.asarray(usable)  # [L, n, d], [L, n]
    if any(zeros.values()):
        log(f"zero steering vectors (left out where they occur): {zeros}")
    return layers, stacks, valid, zeros


def _sweep_k(names: list[str], refs: dict[str, ModelRef], stacks: dict, valid: dict, trials: Trials, dev: _Device,
             cfg: EvalConfig) -> int:
    """One k for every layer pair: cfg.k, or the variance rule over every model's layers, capped by the
    smallest training set any layer leaves."""
    n_fit = int(min((trials.train[None] * np.asarray(valid[m])[:, None]).sum(-1).min() for m in names))
    specs = None
    if cfg.k is None:
        per_model = [jax.tree.map(np.asarray, map_batched(lambda a: spectra(a[0], dev.rows, valid=a[1]),
                                                          (stacks[m], valid[m]), 4)) for m in names]
        specs = [(v[i], tot[i]) for v, tot in per_model for i in range(v.shape[0])]
    return _resolve_k(cfg, specs, n_fit, {m: refs[m].d_model for m in names})


def _sweep_pair(s_name: str, t_name: str, k: int, layers: dict, mats: dict, val_c: np.ndarray, valid: dict,
                cfg: EvalConfig) -> tuple[tuple[int, int], dict]:
    """One direction's sweep matrices -> the layer pair chosen on validation, and its JSON-ready record (with
    the pairs that testing or raw cosine would have picked, for comparison)."""
    mean_c, mean_raw = mats["test_centered"].mean(-1), mats["test"].mean(-1)
    # cosines over different row sets do not compare: the best pair is chosen among layer pairs where every
    # pair has a direction in both models (all of them, if no such layer pair exists)
    full = (np.asarray(valid[s_name]).min(1)[:, None] * np.asarray(valid[t_name]).min(1)[None, :]) > 0
    eligible = full if full.any() else np.ones_like(full)

    def argbest(score):
        return np.unravel_index(np.nanargmax(np.where(eligible, score, -np.inf)), score.shape)

    (i, j), (ti, tj), (ri, rj) = argbest(val_c), argbest(mean_c), argbest(mean_raw)
    best = (layers[s_name][i], layers[t_name][j])
    return best, {
        "source": s_name, "target": t_name, "k": k,
        "layers_source": layers[s_name], "layers_target": layers[t_name],
        **{key: mats[key].mean(-1).tolist() for key in ("test", "test_centered", "train", "scale")},
        "test_centered_std": mats["test_centered"].std(-1, ddof=1 if cfg.trials > 1 else 0).tolist(),
        "validation_centered": val_c.tolist(),
        "eligible": eligible.tolist(),
        "best": {"by": "validation centered cosine", "layer_source": best[0], "layer_target": best[1],
                 "validation_centered": float(val_c[i, j]), "test_centered": float(mean_c[i, j]),
                 "test": float(mean_raw[i, j])},
        "best_on_test": {"layer_source": layers[s_name][ti], "layer_target": layers[t_name][tj],
                         "test_centered": float(mean_c[ti, tj])},
        "best_raw": {"layer_source": layers[s_name][ri], "layer_target": layers[t_name][rj],
                     "test": float(mean_raw[ri, rj])},
    }


@partial(jax.jit, static_argnames=("rotation_only", "batch_size"))
def _layer_sweep_both_ways(a: Projected, b: Projected, w_train: jax.Array, w_test: jax.Array, valid_a: jax.Array,
                           valid_b: jax.Array, rotation_only: bool = False, batch_size: int | None = 1
                           ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """protocol.layer_sweep for a → b ([L_a, L_b, T]) and b → a ([L_b, L_a, T]) from one fit per layer pair and
    trial (protocol.procrustes_stats_both_ways: R_ba = R_abᵀ, s_ba = tr Σ / ‖z_b‖²). a, b: Projected [L, T, …]."""

    def pair(pa, pb, wtr, wte):
        out = []
        for stats, scale in procrustes_stats_both_ways(pa, pb, wtr, rotation_only):
            c = cosines(stats)
            out.append({"test": masked_mean(c.raw, wte), "test_centered": masked_mean(c.centered, wte),
                        "train": masked_mean(c.raw, wtr), "train_centered": masked_mean(c.centered, wtr),
                        "scale": scale})
        return tuple(out)

    over_trials = jax.vmap(pair, in_axes=(0, 0, 0, 0))

    def per_target(pa, va, pb, vb):
        both = va * vb
        return over_trials(pa, pb, w_train * both, w_test * both)

    over_targets = jax.vmap(per_target, in_axes=(None, None, 0, 0))
    forward, reverse = map_batched(lambda x: over_targets(x[0], x[1], b, valid_b), (a, valid_a), batch_size)
    return forward, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), reverse)


def _layer_sweeps(proj: dict, directions: list[tuple[str, str]], w_train: jax.Array, w_test: jax.Array, valid: dict,
                  cfg: EvalConfig) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """layer_sweep's matrices for every direction; the two directions of a model pair come from one fit per
    layer pair and trial."""
    out = {}
    for s_name, t_name in directions:
        if (s_name, t_name) in out:
            continue
        if (t_name, s_name) in directions:
            out[(s_name, t_name)], out[(t_name, s_name)] = _layer_sweep_both_ways(
                proj[s_name], proj[t_name], w_train, w_test, valid[s_name], valid[t_name],
                rotation_only=cfg.rotation_only)
        else:
            out[(s_name, t_name)] = layer_sweep(proj[s_name], proj[t_name], w_train, w_test, valid[s_name],
                                                valid[t_name], rotation_only=cfg.rotation_only)
    return {d: jax.tree.map(np.asarray, m) for d, m in out.items()}


def _sweep(names: list[str], refs: dict[str, ModelRef], load, directions: list[tuple[str, str]], trials: Trials,
           dev: _Device, cfg: EvalConfig, hashes: dict[str, str], log) -> tuple[dict, dict]:
    """Procrustes over every source × target layer of each direction, as one batched call per model pair (both
    directions from one fit) or per direction evaluated alone.

    Returns (best layer pair per direction, the JSON-ready sweep record)."""
    layers, stacks, valid, zeros = _layer_stacks(names, refs, load, hashes, log)
    k = _sweep_k(names, refs, stacks, valid, trials, dev, cfg)
    log(f"layer sweep with k={k}: " + ", ".join(f"{m} {len(layers[m])} layers" for m in names))
    t0 = time.perf_counter()

    def projected(rows) -> dict:  # Projected [L, T, ...] per model, PCA fitted on `rows`
        return {m: map_batched(lambda a: project_trials(fit_pcas(a[0], rows, k, solver=cfg.solver, valid=a[1]), a[0]),
                               (stacks[m], valid[m]), 4) for m in names}

    # the layer pair is chosen on the validation slice (maps fitted on train minus validation), so the test
    # cosine reported at the chosen pair is not selected on the test rows themselves
    selection = {d: m["test_centered"].mean(-1) for d, m in _layer_sweeps(
        projected(train_rows(trials.fit)), directions, dev.fit, dev.val, valid, cfg).items()}
    sweeps = _layer_sweeps(projected(dev.rows), directions, dev.train, dev.test, valid, cfg)
    chosen, record = {}, {}
    for s_name, t_name in directions:
        mats = sweeps[(s_name, t_name)]
        best, rec = _sweep_pair(s_name, t_name, k, layers, mats, selection[(s_name, t_name)], valid, cfg)
        chosen[(s_name, t_name)], record[f"{s_name}->{t_name}"] = best, rec
        log(f"sweep {s_name}->{t_name}: best layers {best} (validation centered "
            f"{rec['best']['validation_centered']:.3f}, test centered {rec['best']['test_centered']:.3f}; the best on "
            f"test would be {rec['best_on_test']})")
    return chosen, {"seconds": time.perf_counter() - t0, "zero_vectors": zeros, "pairs": record}


def _results_header(cfg: EvalConfig, used: list[ModelRef], table: PairTable, trials: Trials, hashes: dict[str, str],
                    layer: int, sweep: bool, token_run) -> dict[str, Any]:
    """The results record before any direction: settings as run, inputs (their arrays' hashes filled in as
    they load) and the pairs' counts."""
    return {
        "stf_jax": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "adapter"},
                   "adapter": dataclasses.asdict(cfg.adapter), "layer": None if sweep else layer, "sweep": sweep,
                   "seeds": list(trials.seeds), "token_run": str(token_run) if token_run else None},
        "inputs": {**describe_inputs(used), "dataset_hash": dataset_hash(table.pairs), "arrays": hashes},
        "n_pairs": table.n, "traits": list(table.trait_names),
        "trait_counts": {t: int(table.traits.count(t)) for t in table.trait_names},
        "directions": [], "sweep": None,
    }


def _without_zero_vectors(vectors: dict, table: PairTable, trials: Trials, dev: _Device, cfg: EvalConfig, log
                          ) -> tuple[Trials, _Device, int]:
    """Trials that leave out every pair with a zero steering vector at an evaluated layer (it has no direction),
    and how many pairs that is."""
    excluded = np.logical_or.reduce([zero_rows(x) for x in vectors.values()])
    if excluded.any():
        log(f"leaving out {int(excluded.sum())} pair(s) with a zero steering vector at the evaluated layers")
        trials = make_trials(table, cfg.trials, cfg.seed, cfg.test_fraction, cfg.val_fraction, exclude=excluded)
        dev = _Device.from_trials(trials, table)
    return trials, dev, int(excluded.sum())


def _shared_pcas(vectors: dict, dev: _Device, trials: Trials, refs: dict[str, ModelRef], names: list[str],
                 cfg: EvalConfig, log) -> tuple[int | None, dict]:
    """One PCA per (model, layer), shared by every direction that uses it, and its k (only when a method is
    scored in PCA coordinates)."""
    if not any(maps.METHODS[m].scorer == "kspace" for m in cfg.methods if m in maps.METHODS):
        return None, {}
    specs = None if cfg.k is not None else [
        jax.tree.map(np.asarray, spectra(jnp.asarray(x), dev.rows)) for x in vectors.values()]
    k = _resolve_k(cfg, specs, trials.n_train_min, {m: refs[m].d_model for m in names})
    log(f"PCA k={k}")
    n_fit = int(np.asarray(trials.train).sum(1).max())
    if cfg.solver == "gram" and cfg.trials > 1 and all(n_fit >= x.shape[1] for x in vectors.values()):
        # the covariance route (more training rows than dimensions): every trial's fit from one pass
        held_out, partition = held_out_rows(trials.train)
        return k, {key: fit_pcas_by_complement(jnp.asarray(x), held_out, k, partition=partition,
                                               batch_size=cfg.batch_size) for key, x in vectors.items()}
    return k, {key: fit_pcas(jnp.asarray(x), dev.rows, k, solver=cfg.solver, batch_size=cfg.batch_size)
               for key, x in vectors.items()}


def _token_maps(cfg: EvalConfig, token_run, s_name: str, t_name: str, ls: int, lt: int, k: int | None) -> dict:
    """Maps of the methods that fit on corpus token states (affine_tokens), fitted on the token run."""
    token_maps = {}
    for name in (m for m in cfg.methods if m in maps.METHODS and maps.METHODS[m].fits_on == "token_states"):
        if token_run is None:
            raise AlignInputError(f"method {name} needs token_run= (a corpus run of both models)")
        xs_tok, xt_tok = paired_token_states(token_run, s_name, t_name, ls, lt, cfg.token_pairing)
        token_maps[name] = maps.fit_map(name, xs_tok, xt_tok, settings=cfg.fit_settings(k))[0]
    return token_maps


def _variance_fields(pcas: dict, s_name: str, t_name: str, ls: int, lt: int) -> dict[str, Any]:
    """Variance the k axes explain per model, and the first trial's cumulative curve (for the report)."""
    ratio = lambda p: np.asarray(p.variance.sum(-1) / p.total_variance)  # noqa: E731
    curve = lambda p: (np.cumsum(np.asarray(p.variance[0])) / float(p.total_variance[0])).tolist()  # noqa: E731
    return {"variance_explained": {s_name: _stats(ratio(pcas[(s_name, ls)])),
                                   t_name: _stats(ratio(pcas[(t_name, lt)]))},
            "variance_curve": {s_name: curve(pcas[(s_name, ls)]), t_name: curve(pcas[(t_name, lt)])}}


def evaluate(run_dirs: Sequence[str | Path], cfg: EvalConfig, layer: int = -6, sweep: bool = False,
             source: str | None = None, target: str | None = None, pairs=None, token_run: str | Path | None = None,
             out_dir: str | Path | None = None, log=print) -> dict[str, Any]:
    """Run the protocol; with out_dir, also save adapters (orbax) and their loss curves there."""
    t_start = time.perf_counter()
    refs = find_models(run_dirs)
    directions = _directions(refs, source, target)
    names = sorted({m for d in directions for m in d})
    used = [refs[m] for m in names]
    table, orders = pair_table(used, pairs)
    trials = make_trials(table, cfg.trials, cfg.seed, cfg.test_fraction, cfg.val_fraction)
    dev = _Device.from_trials(trials, table)
    log(f"{table.n} pairs, {len(table.trait_names)} traits, {cfg.trials} trials "
        f"(train {int(trials.train.sum(1).min())}-{int(trials.train.sum(1).max())}, test "
        f"{int(trials.test.sum(1).min())}-{int(trials.test.sum(1).max())})")

    def load(name: str, lay: int) -> np.ndarray:
        return load_vectors(refs[name], lay, orders[refs[name].run_dir], cfg.array)

    hashes: dict[str, str] = {}
    results = _results_header(cfg, used, table, trials, hashes, layer, sweep, token_run)
    if sweep:
        chosen, results["sweep"] = _sweep(names, refs, load, directions, trials, dev, cfg, hashes, log)
    else:
        chosen = {(s, t): (refs[s].resolve_layer(layer), refs[t].resolve_layer(layer)) for s, t in directions}

    needed = sorted({(m, lay) for (s, t), (ls, lt) in chosen.items() for m, lay in ((s, ls), (t, lt))})
    vectors = {key: load(*key) for key in needed}
    hashes.update({f"{m}@{lay}": array_hash(x) for (m, lay), x in vectors.items()})
    trials, dev, results["excluded_pairs"] = _without_zero_vectors(vectors, table, trials, dev, cfg, log)
    results["split_sizes"] = {side: getattr(trials, side).sum(1).astype(int).tolist() for side in ("train", "test", "val")}
    k_main, pcas = _shared_pcas(vectors, dev, trials, refs, names, cfg, log)
    proper = _procrustes_both_ways(vectors, pcas, chosen, directions, dev, cfg)

    for s_name, t_name in directions:
        ls, lt = chosen[(s_name, t_name)]
        t0 = time.perf_counter()
        token_maps = _token_maps(cfg, token_run, s_name, t_name, ls, lt, k_main)
        methods, scrambling, trained = evaluate_direction(
            vectors[(s_name, ls)], vectors[(t_name, lt)], pcas.get((s_name, ls)), pcas.get((t_name, lt)), dev, table,
            cfg, token_maps, k_main, proper.get((s_name, t_name)))
        entry = {"source": s_name, "target": t_name, "layer_source": ls, "layer_target": lt, "k": k_main,
                 "methods": methods, "scrambling": scrambling, "seconds": time.perf_counter() - t0}
        if pcas:
            entry.update(_variance_fields(pcas, s_name, t_name, ls, lt))
        if out_dir is not None and trained:
            entry["adapters"] = _save_trained(Path(out_dir), s_name, t_name, ls, lt, trained, trials)
        results["directions"].append(entry)
        best = max(methods, key=lambda m: methods[m]["test_centered"]["mean"])
        log(f"{s_name}->{t_name} (layers {ls}->{lt}): " + ", ".join(
            f"{m} {v['test']['mean']:.3f}/{v['test_centered']['mean']:.3f}" for m, v in methods.items())
            + f"  [raw/centered; best centered: {best}]  {entry['seconds']:.1f}s")
    results["seconds"] = time.perf_counter() - t_start
    return results


def _save_trained(out: Path, s_name: str, t_name: str, ls: int, lt: int, trained: dict, trials: Trials) -> dict:
    """Trained maps (all trials stacked on axis 0) as orbax checkpoints + loss curves as JSON."""
    saved = {}
    for kind, (fitted, info) in trained.items():
        tag = pair_tag(s_name, t_name)
        path = inside(out, Path("adapters") / tag / kind)
        adapters_lib.save_adapter(path, fitted,
                                  extra={"source": s_name, "target": t_name, "layer_source": ls, "layer_target": lt,
                                         "trial_seeds": list(trials.seeds), "leading_axis": "trial"})
        curves = {"eval_every": fitted.config.eval_every, "train": np.asarray(info["train_curve"]).tolist(),
                  "val": np.asarray(info["val_curve"]).tolist(), "best_check": np.asarray(info["best_check"]).tolist(),
                  "steps": np.asarray(info["steps"]).tolist(), "trial_seeds": list(trials.seeds)}
        curve_path = inside(out, Path("curves") / tag / f"{kind}.json")
        curve_path.parent.mkdir(parents=True, exist_ok=True)
        curve_path.write_text(json.dumps(curves, allow_nan=True) + "\n")
        saved[kind] = {"checkpoint": str(path.relative_to(out)), "curves": str(curve_path.relative_to(out))}
    return saved
