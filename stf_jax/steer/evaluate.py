"""Causal evaluation of transfer: does a transferred vector move the target model like its own vector does?

For each directed pair (source → target) at chosen layers, on one text-disjoint split of the run's pairs:
  1. trait vectors (mean of the training pairs' unit vectors) in both models;
  2. maps fitted on the training pairs (`stf_jax.align.carry_traits`), each carrying the source's trait
     vectors into the target;
  3. conditions steered into the target: `native` (its own vectors), one per map method, and the
     controls `zero_shot` (the source vector zero-padded / truncated, the Preference-Vector idea), `random` (random unit
     directions, the same norm as every other condition) and `shuffled` (the best map's vectors assigned to
     the wrong traits);
  4. an alpha sweep of additive steering (alpha in units of the layer's mean residual norm) scored by
     propensity on held-out pairs (the LRT paper): per trait a curve, its slope, and — against the native
     curve — the slope ratio, Pearson r and MSE (the LRT paper), with bootstrap intervals over pairs;
  5. paired bootstrap comparisons of per-pair slopes (the Pythia negative result), exactness checks (alpha = 0 and
     self-injection reproduce the unsteered model), and generation lengths for verbosity (the Preference-Vector idea).

`python -m stf_jax.steer eval RUN_DIR` is a thin CLI over `evaluate_steering`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..align import adapters as adapters_lib
from ..extract.rundir import ModelRef, PairTable, find_models, load_vectors, make_trials, pair_table, zero_rows
from ..align.pca import k_for_pair
from ..align import maps
from ..transfer.carry_settings import CARRY_FLAGS, CarrySettings
from ..align.carry_traits import MAP_METHODS, trait_vectors, transferred_trait_vectors, unit
from ..errors import SteeringInputError
from ..options import OptionError, add_fields, check_options, fields_from_args, option
from ..core import stats
from ..core.layers import model_layer_pairs
from ..extract.store import pair_tag
from ..safe_paths import inside

CONTROLS = ("zero_shot", "random", "shuffled")


@dataclasses.dataclass(frozen=True)
class SteerConfig:
    """Settings of the causal evaluation (recorded in steer_results.json).

    alphas: additive strengths in units of the steered layer's mean |h| (0 is added if missing).
    pairs_per_trait: held-out pairs scored per trait; traits: a subset to steer (None: all); the maps are
    still fitted on every trait's pairs (minus the held-out trait).
    max_continuation_tokens: propensity scores the first tokens of each side (cost grows with it).
    methods: alignment methods whose transferred vectors are steered; controls: any of CONTROLS.
    holdout_trait: carry each trait's vector with maps fitted without that trait's pairs (leave-one-trait-
    out), so no transferred vector was a training target of its map; False fits one map on all pairs.
    k / variance: PCA components for procrustes; None (the default) takes the protocol's rule, the smallest k
    explaining `variance` of both models' training vectors (`align.pca.k_for_pair`), so the maps that steer
    are the maps the alignment protocol scores; ridge (None: each method's own default, as `transfer fit`),
    adapter: as in alignment; carry: s2l's SAE and many-to-one's stack (`transfer.carry_settings.CarrySettings`).
    generation_trait / generation_prompts / max_new_tokens / generation_alpha: the Preference-Vector idea's length check
    (alpha defaults to the largest alpha); chat_template: wrap generation prompts in the model's template.
    """

    alphas: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
    pairs_per_trait: int = option(5, ge=2)
    traits: tuple[str, ...] | None = None
    max_continuation_tokens: int = option(16, ge=1)
    methods: tuple[str, ...] = ("procrustes", "affine", "linear")
    holdout_trait: bool = True
    controls: tuple[str, ...] = CONTROLS
    k: int | None = option(None, ge=1)
    variance: float = option(0.95, gt=0, le=1)
    ridge: float | None = option(None, ge=0)
    adapter: adapters_lib.AdapterConfig = adapters_lib.AdapterConfig()
    carry: CarrySettings = CarrySettings()
    seed: int = option(0, ge=0)
    test_fraction: float = option(0.2, gt=0, lt=1)
    val_fraction: float = option(0.1, ge=0, lt=1)
    bootstrap: int = option(1000, ge=1)
    generation_trait: str | None = "verbosity"
    generation_prompts: int = option(6, ge=0)
    max_new_tokens: int = option(40, ge=1)
    generation_alpha: float | None = None
    chat_template: bool = True
    self_injection_pairs: int = option(3, ge=0)

    def __post_init__(self):
        check_options(self)
        bad = sorted(set(self.methods) - set(MAP_METHODS))
        if bad:
            raise OptionError(f"unknown steering method(s) {bad}; choose from {list(MAP_METHODS)}")
        bad = sorted(set(self.controls) - set(CONTROLS))
        if bad:
            raise OptionError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")
        if len(set(self.alphas)) < 2:
            raise OptionError("give at least two distinct alphas for a steering curve")
        if self.pairs_per_trait < 2:
            raise OptionError("pairs_per_trait must be >= 2 (intervals resample pairs)")
        if set(self.methods) & set(maps.SAE_METHODS) and not self.carry.sae:
            raise OptionError("method s2l carries through the source model's SAE: give --sae DIR (YAML: carry: "
                              "{sae: DIR}; python -m stf_jax.sae train makes one)")

    @property
    def alpha_grid(self) -> np.ndarray:
        return np.unique(np.asarray(tuple(self.alphas) + (0.0,), np.float64))


def layers_from_sweep(sweep_results: str | Path | dict, n_layers: dict[str, int]) -> dict[tuple[str, str], tuple[int, int]]:
    """Best steerable layer pair per direction from an alignment sweep (validation centered cosine).

    Only block outputs 2..n_layers-1 are taken: the last hidden state is after the final norm, and
    llama.cpp control vectors cannot hold block 0's output (HF layer 1), so vectors steered there could
    not be exported. The best eligible cell among those is taken."""
    res = json.loads(Path(sweep_results).read_text()) if not isinstance(sweep_results, dict) else sweep_results
    if not res.get("sweep"):
        raise SteeringInputError(f"{sweep_results}: no layer sweep in these results (python -m stf_jax.align --layer-sweep)")
    out = {}
    for s in res["sweep"]["pairs"].values():
        ls, lt = np.asarray(s["layers_source"]), np.asarray(s["layers_target"])
        score = np.asarray(s.get("validation_centered", s["test_centered"]), np.float64)
        ok = np.asarray(s["eligible"], bool)
        ok &= ((ls >= 2) & (ls < n_layers[s["source"]]))[:, None] & ((lt >= 2) & (lt < n_layers[s["target"]]))[None, :]
        if not ok.any():
            raise SteeringInputError(f"sweep {s['source']}->{s['target']}: no steerable layer pair was swept")
        i, j = np.unravel_index(np.nanargmax(np.where(ok, score, -np.inf)), score.shape)
        out[(s["source"], s["target"])] = (int(ls[i]), int(lt[j]))
    return out


# ---------------------------------------------------------------- vectors per condition


def condition_vectors(x_s: np.ndarray, x_t: np.ndarray, traits: Sequence[str], w_train: np.ndarray,
                      w_val: np.ndarray, cfg: SteerConfig, only: Sequence[str] | None = None,
                      sources: dict[str, np.ndarray] | None = None,
                      sae: dict[str, Any] | None = None) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """{condition: {trait: unit vector [d_t]}} for the traits in `only` (default all), and notes (cosines to
    native, the shuffle's source). Maps are fitted on every trait's rows (minus the held-out trait).
    sources / sae: the rows and SAE settings of methods that read other source layers (`method_sources`)."""
    names = [t for t in dict.fromkeys(traits) if only is None or t in set(only)]
    tgt = trait_vectors(x_t, w_train, traits)
    k = k_for_pair(x_s, x_t, w_train, cfg.k, cfg.variance)
    carried = transferred_trait_vectors(x_s, x_t, w_train, w_val, traits, cfg.methods, holdout=cfg.holdout_trait,
                                        k=k, ridge=cfg.ridge, adapter=cfg.adapter, seed=cfg.seed, only=names,
                                        sources=sources, sae=sae)
    conds = {"native": {t: unit(tgt[t]) for t in names}}
    for m in cfg.methods:
        conds[m] = {t: unit(carried[m][t]) for t in names}

    def cos_to_native(c: str) -> dict[str, float]:
        return {t: float(conds[c][t] @ conds["native"][t]) for t in names}

    notes: dict[str, Any] = {"k": k}
    if "zero_shot" in cfg.controls:
        conds["zero_shot"] = {t: unit(carried["identity"][t]) for t in names}
    if "random" in cfg.controls:
        rng = np.random.default_rng([cfg.seed, 7])
        conds["random"] = {t: unit(rng.standard_normal(x_t.shape[1])) for t in names}
    if "shuffled" in cfg.controls and cfg.methods:
        best = max(cfg.methods, key=lambda m: np.mean(list(cos_to_native(m).values())))
        rng = np.random.default_rng([cfg.seed, 11])
        perm = rng.permutation(len(names))
        while len(names) > 1 and (perm == np.arange(len(names))).any():  # a derangement: every trait moves
            perm = rng.permutation(len(names))
        conds["shuffled"] = {t: conds[best][names[p]] for t, p in zip(names, perm)}
        notes["shuffled_from"] = best
        notes["shuffled_assignment"] = {t: names[p] for t, p in zip(names, perm)}
    notes["cosine_to_native"] = {c: cos_to_native(c) for c in conds}
    return conds, notes


def method_sources(ref_s: ModelRef, order, cfg: SteerConfig) -> tuple[dict[str, np.ndarray], dict[str, Any],
                                                                        dict[str, list[int]]]:
    """What the methods that read other source layers than the steered one carry from, as `transfer fit` plans
    it: many-to-one the stack of `cfg.carry.stack` layers spread over depth, side by side; s2l the layer its
    SAE reads. -> (rows by method [n, d_m], s2l's FitSettings fields, source layers by method)."""
    from ..transfer.fit import sae_fit_settings, stack_layers
    from ..transfer.mixture import stacked_vectors

    rows, sae, layers = {}, {}, {}
    for m in cfg.methods:
        if m in maps.STACKED_METHODS:
            layers[m] = list(stack_layers(ref_s, cfg.carry.stack))
            rows[m] = stacked_vectors(ref_s, tuple(layers[m]), order)
        elif m in maps.SAE_METHODS:
            sae = sae_fit_settings(cfg.carry.sae, ref_s, cfg.carry.sae_k)
            layers[m] = [sae.pop("layer")]
            rows[m] = load_vectors(ref_s, layers[m][0], order)
    return rows, sae, layers


def direction_conditions(refs: dict, orders: dict, table, source: str, target: str, layers: dict | None,
                         layer, cfg: SteerConfig, only: Sequence[str]):
    """One directed pair of a run: its layer pair (`layers[(source, target)]`, else `layer` in both models),
    the run's split (one trial; pairs whose vector is zero in either model, at any layer a method reads, left
    out) and the condition vectors of `condition_vectors`. Returns (layer_source, layer_target, conds, notes,
    trials); notes["method_layers"] names the source layers of the methods that read others than ls."""
    ls, lt = (layers or {}).get((source, target)) or (refs[source].resolve_layer(layer),
                                                      refs[target].resolve_layer(layer))
    x_s = load_vectors(refs[source], ls, orders[refs[source].run_dir])
    x_t = load_vectors(refs[target], lt, orders[refs[target].run_dir])
    sources, sae, method_layers = method_sources(refs[source], orders[refs[source].run_dir], cfg)
    excluded = zero_rows(x_s) | zero_rows(x_t)
    for rows in sources.values():
        excluded |= zero_rows(rows)
    trials = make_trials(table, 1, cfg.seed, cfg.test_fraction, cfg.val_fraction, exclude=excluded)
    conds, notes = condition_vectors(x_s, x_t, np.asarray(table.traits), trials.train[0], trials.val[0], cfg,
                                     only=list(only), sources=sources, sae=sae)
    notes["method_layers"] = method_layers
    return ls, lt, conds, notes, trials


# ---------------------------------------------------------------- curves and their statistics


def _trait_stats(alphas: np.ndarray, curves: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """curves: [A, P] propensity per alpha and pair."""
    per_pair = stats.slopes(alphas, curves)
    mean_curve = curves.mean(1)
    return {"curve": stats.curve_ci(curves, n_boot, seed), "slope": stats.mean_ci(per_pair, n_boot, seed),
            "monotonic": bool(np.all(np.diff(mean_curve) > 0)), "n_pairs": int(curves.shape[1])}


def _versus_native(alphas, curves: np.ndarray, native: np.ndarray) -> dict[str, float]:
    m, n = curves.mean(1), native.mean(1)
    s_c, s_n = float(stats.slopes(alphas, m[:, None])[0]), float(stats.slopes(alphas, n[:, None])[0])
    return {"slope_ratio": s_c / s_n if s_n != 0 else float("nan"), "pearson_r": stats.pearson(m, n),
            "mse": float(np.mean((m - n) ** 2))}


def summarize_direction(alphas: np.ndarray, curves: dict[str, dict[str, np.ndarray]], cfg: SteerConfig,
                        kinds: dict[str, str], cos: dict[str, dict[str, float]]) -> dict[str, Any]:
    """curves: {condition: {trait: [A, P]}} (the same pairs in every condition) -> conditions + comparisons."""
    traits = list(curves["native"])
    out: dict[str, Any] = {}
    pair_slopes, groups = {}, None
    for c, per_trait in curves.items():
        rows = {}
        for i, t in enumerate(traits):
            rows[t] = _trait_stats(alphas, per_trait[t], cfg.bootstrap, cfg.seed + i)
            rows[t].update(_versus_native(alphas, per_trait[t], curves["native"][t]))
            rows[t]["cosine_to_native"] = cos.get(c, {}).get(t, float("nan"))
        pair_slopes[c] = np.concatenate([stats.slopes(alphas, per_trait[t]) for t in traits])
        if groups is None:
            groups = np.concatenate([np.full(per_trait[t].shape[1], i) for i, t in enumerate(traits)])
        native_all = pair_slopes["native"] if "native" in pair_slopes else None
        summary = {key: stats.mean_ci(np.array([rows[t][key] for t in traits]), cfg.bootstrap, cfg.seed)
                   for key in ("pearson_r", "mse", "slope_ratio")}
        summary["slope"] = stats.mean_ci(pair_slopes[c], cfg.bootstrap, cfg.seed, groups)
        if native_all is not None:
            a, b = pair_slopes[c], native_all
            # pooled effect ratio: mean slope / mean native slope, pairs resampled within traits
            summary["effect_ratio"] = stats.bootstrap(lambda ix: a[ix].mean() / b[ix].mean(), len(a), cfg.bootstrap,
                                                      cfg.seed, groups)
        summary["n_monotonic"] = int(sum(rows[t]["monotonic"] for t in traits))
        summary["n_positive_slope"] = int(sum(rows[t]["slope"]["lo"] > 0 for t in traits))
        out[c] = {"kind": kinds[c], "method": c if kinds[c] == "transferred" else None, "traits": rows,
                  "summary": summary}
    comparisons = []
    transferred = [c for c in curves if kinds[c] == "transferred"]
    pairs = [(c, ref) for c in transferred for ref in ("native", "zero_shot", "random", "shuffled") if ref in curves]
    pairs += [(c, "random") for c in ("native", "zero_shot") if c in curves and "random" in curves]
    pairs += [(b, a) for i, a in enumerate(transferred) for b in transferred[i + 1:]]  # method against method
    for a_name, b_name in pairs:
        diff = pair_slopes[a_name] - pair_slopes[b_name]
        comparisons.append({"a": a_name, "b": b_name, "metric": "slope",
                            "delta": stats.mean_ci(diff, cfg.bootstrap, cfg.seed, groups), "n": int(len(diff))})
    return {"conditions": out, "comparisons": comparisons}


def in_model_summary(alphas, native: dict[str, np.ndarray], native_rows: dict[str, dict], cfg: SteerConfig
                     ) -> dict[str, Any]:
    """The Preference-Vector idea's first check: do the model's own vectors move propensity monotonically with alpha?

    native: {trait: [A, P] curves}; native_rows: their per-trait statistics (`summarize_direction`'s
    native condition), of which the curve, slope and monotonicity are kept."""
    traits = list(native)
    keep = ("curve", "slope", "monotonic", "n_pairs")
    rows = {t: {k: native_rows[t][k] for k in keep} for t in traits}

    def count_positive(ix_per_trait):
        return sum(stats.slopes(alphas, native[t][:, ix]).mean() > 0 for t, ix in zip(traits, ix_per_trait))

    rng = np.random.default_rng(cfg.seed)
    boot = [count_positive([rng.integers(0, native[t].shape[1], native[t].shape[1]) for t in traits])
            for _ in range(cfg.bootstrap)]
    return {"traits": rows, "n_traits": len(traits),
            "n_monotonic": int(sum(r["monotonic"] for r in rows.values())),
            "n_positive_slope": int(sum(r["slope"]["lo"] > 0 for r in rows.values())),
            "n_slope_above_zero": stats.interval(np.array(boot, np.float64),
                                                 sum(r["slope"]["mean"] > 0 for r in rows.values()))}


# ---------------------------------------------------------------- the driver


def _eval_rows(table, test: np.ndarray, traits: Sequence[str], per_trait: int, seed: int) -> dict[str, np.ndarray]:
    """Held-out rows per trait (a seeded choice, sorted)."""
    rng = np.random.default_rng([seed, 3])
    all_traits = np.asarray(table.traits)
    out = {}
    for t in traits:
        rows = np.nonzero((test > 0) & (all_traits == t))[0]
        if len(rows) < 2:
            raise SteeringInputError(f"trait {t!r} has {len(rows)} held-out pair(s); need >= 2")
        out[t] = np.sort(rng.choice(rows, min(per_trait, len(rows)), replace=False))
    return out


def _exactness(model, layer: int, pairs, n: int) -> dict[str, float]:
    """alpha = 0 through the intervention path, and self-injection (the last prompt token's state replaced by
    itself, one pair at a time): both must reproduce the unsteered log-probs."""
    import jax.numpy as jnp

    from ..models import decoder
    from .inject import make_intervention, position_mask
    from .propensity import encode_continuations, mean_logprobs

    pairs = list(pairs)[:n]
    if not pairs:  # self_injection_pairs = 0: the check is off
        return {"alpha0_max_abs_diff": None, "self_injection_max_abs_diff": None, "n_pairs": 0}
    prompts, conts = [p.prompt for p in pairs], [p.positive for p in pairs]
    plain = mean_logprobs(model, prompts, conts)
    zero = mean_logprobs(model, prompts, conts, lambda m: make_intervention(
        model.config, [layer], np.ones(model.config.d_model, np.float32), 0.0, position_mask(m)))
    diffs = []
    for prompt, cont, ref in zip(prompts, conts, plain):
        ids, mask, _ = encode_continuations(model, [prompt], [cont])
        h = np.asarray(decoder.hidden_states(model.params, jnp.asarray(ids), jnp.asarray(mask), cfg=model.config,
                                             layers=(layer,), dtype=model.dtype))[0, 0]
        last = len(model.tokenizer(prompt, add_special_tokens=True)["input_ids"]) - 1
        pos = np.zeros_like(mask, np.float32)
        pos[0, last] = 1.0
        iv = make_intervention(model.config, [layer], h[last], 1.0, pos, mode="replace")
        got = mean_logprobs(model, [prompt], [cont], lambda m, iv=iv: iv)[0]
        diffs.append(abs(float(got) - float(ref)))
    return {"alpha0_max_abs_diff": float(np.abs(zero - plain).max()), "self_injection_max_abs_diff": max(diffs),
            "n_pairs": len(pairs)}


def _trait_scores(model, layer: int, prompts: Sequence[str], texts: Sequence[str], v: np.ndarray) -> np.ndarray:
    """The target model's own read-out of the trait in generated text: the unsteered last-token state of
    prompt + completion at the steered layer, projected on the model's native trait vector (unit)."""
    ids, mask = model.encode([f"{p} {t}" for p, t in zip(prompts, texts)], padding_side="left")
    h = np.asarray(model.hidden_states(ids, mask, [layer]))[0][:, -1]  # [B, D] (left padding: last = real)
    return h @ np.asarray(v, np.float32)


def _generation(model, layer: int, prompts: Sequence[str], conds: dict[str, dict[str, np.ndarray]], trait: str,
                alpha: float, scale: float, cfg: SteerConfig) -> dict[str, Any]:
    """The Preference-Vector idea: output length (words) under +alpha and -alpha steering, per condition, vs unsteered; and
    the target's own trait read-out of each completion (projection on its native vector), vs unsteered."""
    from ..models.generate import generate
    from .inject import make_intervention, position_mask

    chat = cfg.chat_template and getattr(model.tokenizer, "chat_template", None) is not None
    common = dict(max_new_tokens=cfg.max_new_tokens, chat_template=chat)
    plain = generate(model, list(prompts), **common)
    base = np.array([len(t.split()) for t in plain], np.float64)
    probe = conds["native"][trait]
    base_score = _trait_scores(model, layer, prompts, plain, probe)
    out = {"trait": trait, "alpha": alpha, "max_new_tokens": cfg.max_new_tokens, "chat_template": chat,
           "n_prompts": len(prompts), "unsteered": {"mean_length": stats.mean_ci(base, cfg.bootstrap, cfg.seed),
                                                    "trait_score": stats.mean_ci(base_score, cfg.bootstrap, cfg.seed)},
           "conditions": {}, "examples": {"prompt": prompts[0], "unsteered": plain[0]}}
    for c, vecs in conds.items():
        row = {}
        for sign in (1.0, -1.0):
            texts = generate(model, list(prompts), intervention_for=lambda m, v=vecs[trait], a=sign * alpha:
                             make_intervention(model.config, [layer], v, a, position_mask(m), scale=scale), **common)
            lengths = np.array([len(t.split()) for t in texts], np.float64)
            key = "plus" if sign > 0 else "minus"
            row[f"mean_length_{key}"] = stats.mean_ci(lengths, cfg.bootstrap, cfg.seed)
            row[f"delta_{key}"] = stats.mean_ci(lengths - base, cfg.bootstrap, cfg.seed)
            score = _trait_scores(model, layer, prompts, texts, probe)
            row[f"trait_score_delta_{key}"] = stats.mean_ci(score - base_score, cfg.bootstrap, cfg.seed)
            if c == "native" or c in cfg.methods[:1]:
                out["examples"][f"{c}_{key}"] = texts[0]
        row["mean_length"] = row["mean_length_plus"]
        out["conditions"][c] = row
    return out


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What every direction reads from the run: the models' references, the pair table and the steered traits."""

    refs: dict[str, ModelRef]
    table: PairTable
    orders: dict
    traits: list[str]


def _steering_inputs(run_dir, cfg: SteerConfig, directions) -> tuple[_Inputs, list[tuple[str, str]]]:
    """Find the run's models and pairs and check the directions and traits asked for, before any work."""
    refs = find_models([run_dir])
    names = sorted(refs)
    if directions is None:
        directions = [(s, t) for s in names for t in names if s != t]
    for s, t in directions:
        for m in (s, t):
            if m not in refs:
                raise SteeringInputError(f"model {m!r} is not in {run_dir}; it has {names}")
    table, orders = pair_table([refs[m] for m in names])
    traits = list(cfg.traits) if cfg.traits else list(table.trait_names)
    missing = sorted(set(traits) - set(table.trait_names))
    if missing:
        raise SteeringInputError(f"trait(s) {missing} are not in the run; it has {list(table.trait_names)}")
    return _Inputs(refs, table, orders, traits), directions


def _results_header(run_dir, cfg: SteerConfig, alphas: np.ndarray, traits: list[str]) -> dict[str, Any]:
    """The results record before any direction: version, settings as run, alphas and traits."""
    return {
        "stf_jax": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "run_dir": str(run_dir),
        "config": {**dataclasses.asdict(cfg), "mode": "additive", "scale": "mean-norm"},
        "alphas": alphas.tolist(), "traits": traits, "models": {}, "directions": []}


def _direction_conditions(inp: _Inputs, s_name: str, t_name: str, ls: int, lt: int, cfg: SteerConfig, log):
    """One text-disjoint split of the pairs and every condition's vectors fitted on its training rows."""
    # maps see every trait's pairs (minus the held-out one); only the chosen traits are steered
    _, _, conds, notes, trials = direction_conditions(inp.refs, inp.orders, inp.table, s_name, t_name,
                                                      {(s_name, t_name): (ls, lt)}, None, cfg, inp.traits)
    log(f"{s_name}->{t_name} (layers {ls}->{lt}): cosine to native "
        + ", ".join(f"{c} {np.mean(list(v.values())):.3f}" for c, v in notes["cosine_to_native"].items()))
    return conds, notes, trials.train[0], trials.test[0]


def _prefix_scorers(model, layer: int, pairs: dict[str, list], cfg: SteerConfig) -> tuple[dict, float]:
    """One cached-prefix scorer per trait, all padded to one width (one compiled program per model), and the
    layer's mean residual norm over the scored tokens (the unit of alpha)."""
    from .propensity import PrefixScorer, encode_scored, first_difference

    for t, ps in pairs.items():  # propensity compares the sides' first tokens: they must differ there
        need = [first_difference(model, p.prompt, p.positive, p.negative) for p in ps]
        if all(n is None or n > cfg.max_continuation_tokens for n in need):
            shown = min((n for n in need if n is not None), default=None)
            raise SteeringInputError(
                f"trait {t!r}: the two sides of its held-out pairs agree on their first {cfg.max_continuation_tokens} "
                "scored tokens, so propensity cannot tell them apart" + (
                    f"; give --max-continuation-tokens {shown} or more" if shown else "") + " (A/B items: python -m "
                "stf_jax.judge ab scores the answer letter)")
    scorers = {}
    width = 0
    for t, ps in pairs.items():  # one width for every trait: one compiled program per model
        ids = encode_scored(model, [p.prompt for p in ps] * 2, [p.positive for p in ps] + [p.negative for p in ps],
                            cfg.max_continuation_tokens)[0]
        width = max(width, ids.shape[1])
    width = int(np.ceil(width / 16) * 16)
    norm_sum, norm_count = 0.0, 0
    for t, ps in pairs.items():
        scorers[t] = PrefixScorer(model, layer, [p.prompt for p in ps], [p.positive for p in ps],
                                  [p.negative for p in ps], cfg.max_continuation_tokens, width)
        a, b = scorers[t].mean_norm()
        norm_sum, norm_count = norm_sum + a, norm_count + b
    return scorers, norm_sum / norm_count


def _alpha_sweeps(scorers: dict, conds: dict[str, dict[str, np.ndarray]], traits: list[str], alphas: np.ndarray,
                  scale: float, t0: float, log) -> dict[str, dict[str, np.ndarray]]:
    """Propensity curves {condition: {trait: [A, P]}}; alpha = 0 is the one unsteered point of every condition."""
    base = {t: scorers[t].propensity() for t in traits}
    curves: dict[str, dict[str, np.ndarray]] = {c: {} for c in conds}
    todo = len(conds) * len(traits)
    done = 0
    for c, vecs in conds.items():
        for t in traits:
            rows_a = [base[t] if a == 0 else scorers[t].propensity(vecs[t] * scale, float(a)) for a in alphas]
            curves[c][t] = np.stack(rows_a)  # [A, P]
            done += 1
        log(f"  {c}: {done}/{todo} trait sweeps ({time.perf_counter() - t0:.0f}s)")
    return curves


def _generation_entry(model, layer: int, inp: _Inputs, test: np.ndarray, conds: dict, alphas: np.ndarray,
                      scale: float, cfg: SteerConfig) -> dict[str, Any] | None:
    """The length check on the generation trait's held-out prompts (None when that trait is not steered)."""
    gen_trait = cfg.generation_trait
    if not (gen_trait and gen_trait in inp.traits):
        return None
    gen_rows = np.nonzero((test > 0) & (np.asarray(inp.table.traits) == gen_trait))[0][: cfg.generation_prompts]
    prompts = [inp.table.pairs[i].prompt for i in gen_rows]
    gen_conds = {c: v for c, v in conds.items() if c != "shuffled"}
    alpha_gen = cfg.generation_alpha if cfg.generation_alpha is not None else float(max(alphas))
    return _generation(model, layer, prompts, gen_conds, gen_trait, alpha_gen, scale, cfg)


def _save_vectors(out_dir: str | Path, s_name: str, t_name: str, conds: dict, ls: int, lt: int) -> str:
    """Every condition's vectors as vectors/<source>__to__<target>.npz, so a steered vector can be reused."""
    path = inside(Path(out_dir), Path("vectors") / f"{pair_tag(s_name, t_name)}.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{c}/{t}": v for c, vecs in conds.items() for t, v in vecs.items()},
             layer_source=ls, layer_target=lt)
    return str(path.relative_to(out_dir))


def _steer_direction(inp: _Inputs, s_name: str, t_name: str, ls: int, lt: int, models: dict, alphas: np.ndarray,
                     cfg: SteerConfig, out_dir, log) -> tuple[dict[str, Any], tuple]:
    """One directed pair end to end -> its results entry, and the target's native curves for the in-model check."""
    from ..models.loading import load_model

    t0 = time.perf_counter()
    conds, notes, w_train, test = _direction_conditions(inp, s_name, t_name, ls, lt, cfg, log)
    kinds = {c: "native" if c == "native" else ("transferred" if c in cfg.methods else "control") for c in conds}
    if t_name not in models:
        models[t_name] = load_model(t_name)
    model = models[t_name]
    rows = _eval_rows(inp.table, test, inp.traits, cfg.pairs_per_trait, cfg.seed)
    pairs = {t: [inp.table.pairs[i] for i in r] for t, r in rows.items()}
    scorers, scale = _prefix_scorers(model, lt, pairs, cfg)
    curves = _alpha_sweeps(scorers, conds, inp.traits, alphas, scale, t0, log)
    entry = {"source": s_name, "target": t_name, "layer_source": ls, "layer_target": lt,
             "mean_norm": scale, "k": notes["k"], "n_train": int(w_train.sum()),
             "pairs": {t: [inp.table.pair_ids[i] for i in r] for t, r in rows.items()},
             **summarize_direction(alphas, curves, cfg, kinds, notes["cosine_to_native"]),
             "shuffled_from": notes.get("shuffled_from"), "method_layers": notes["method_layers"],
             "exactness": _exactness(model, lt, [p for ps in pairs.values() for p in ps], cfg.self_injection_pairs)}
    generation = _generation_entry(model, lt, inp, test, conds, alphas, scale, cfg)
    if generation is not None:
        entry["generation"] = generation
    entry["seconds"] = time.perf_counter() - t0
    if out_dir is not None:
        entry["vectors"] = _save_vectors(out_dir, s_name, t_name, conds, ls, lt)
    summ = entry["conditions"]
    log(f"{s_name}->{t_name}: slope native {summ['native']['summary']['slope']['mean']:.3f}; "
        + ", ".join(f"{c} ratio {summ[c]['summary'].get('effect_ratio', {}).get('mean', float('nan')):.2f} "
                    f"r {summ[c]['summary']['pearson_r']['mean']:.2f}" for c in summ if c != "native")
        + f"  ({entry['seconds']:.0f}s)")
    return entry, (lt, scale, curves["native"], summ["native"]["traits"])


def _in_model_entries(native_by_target: dict[str, tuple], alphas: np.ndarray, cfg: SteerConfig, log
                      ) -> dict[str, Any]:
    """Per target model: does its own vector steer it (from the native curves of its first direction)?"""
    out = {}
    for t_name, (lt, scale, native, native_rows) in native_by_target.items():
        out[t_name] = {"layer": lt, "mean_norm": scale, "in_model": in_model_summary(alphas, native, native_rows, cfg)}
        im = out[t_name]["in_model"]
        log(f"in-model {t_name} (layer {lt}): monotonic {im['n_monotonic']}/{im['n_traits']}, slope CI above 0 "
            f"{im['n_positive_slope']}/{im['n_traits']}")
    return out


def evaluate_steering(run_dir: str | Path, cfg: SteerConfig = SteerConfig(),
                      layers: dict[tuple[str, str], tuple[int, int]] | None = None, layer: int = -6,
                      directions: Sequence[tuple[str, str]] | None = None, models: dict | None = None,
                      out_dir: str | Path | None = None, log=print) -> dict[str, Any]:
    """Run the causal evaluation over the directed model pairs of an extraction run.

    layers: {(source, target): (layer_source, layer_target)} (e.g. `layers_from_sweep`); otherwise `layer`
    (an HF index, negatives from the end) in both models. models: preloaded {name: Model} (else loaded by
    name). out_dir: also save every condition's vectors there (`vectors/<source>__to__<target>.npz`)."""
    t_start = time.perf_counter()
    inp, directions = _steering_inputs(run_dir, cfg, directions)
    alphas = cfg.alpha_grid
    models = dict(models or {})
    results = _results_header(run_dir, cfg, alphas, inp.traits)
    native_by_target: dict[str, tuple] = {}
    for s_name, t_name in directions:
        ls, lt = (layers or {}).get((s_name, t_name)) or (inp.refs[s_name].resolve_layer(layer),
                                                          inp.refs[t_name].resolve_layer(layer))
        entry, native = _steer_direction(inp, s_name, t_name, ls, lt, models, alphas, cfg, out_dir, log)
        results["directions"].append(entry)
        native_by_target.setdefault(t_name, native)
    results["models"] = _in_model_entries(native_by_target, alphas, cfg, log)
    results["seconds"] = time.perf_counter() - t_start
    return results


# ---------------------------------------------------------------- CLI (python -m stf_jax.steer eval)


def add_eval_parser(subparsers):
    p = subparsers.add_parser(
        "eval", help="alpha-sweep propensity: native vs transferred vectors, controls, bootstrap CIs",
        description="Steer each target model with its own trait vectors, with vectors transferred from the other "
                    "model by each alignment method, and with controls; write steer_results.json/.md and curves.csv.")
    p.add_argument("run_dir", nargs="?", help="an extraction run with >= 2 models (python -m stf_jax.extract); "
                                              "or leave it out and score one vector file with --vector")
    one = p.add_argument_group(
        "one vector file (any control vector: stf_jax, llama.cpp, repeng; every layer it holds is steered)",
        "python -m stf_jax.steer eval --vector carried.gguf --model gemma3-270m --pairs shipped --trait formality "
        "--skip 40 --pairs-per-trait 16 --alphas -40 40")
    one.add_argument("--vector", help="the vector file to score (instead of a run)")
    one.add_argument("--model", help="the model it steers (registry name, HF directory or .gguf)")
    one.add_argument("--pairs", default="shipped", help="held-out pairs: 'shipped' or a file/folder [shipped]")
    one.add_argument("--trait", help="the trait's pairs to score (required with --vector unless the file names it)")
    one.add_argument("--skip", type=int, default=0,
                     help="skip the trait's first N pairs (e.g. those the vector was made from) [0]")
    one.add_argument("--scale", choices=["stored", "unit", "mean-norm"], default="stored",
                     help="alpha * v as stored (llama.cpp's FILE:S), * v/|v|, or * mean|h| * v/|v| [stored]")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--sweep", help="an alignment results.json with a layer sweep: use its best steerable layers")
    where.add_argument("--layer", type=int, default=-6, help="HF hidden-state index in both models [-6]")
    where.add_argument("--layers", nargs="+", metavar="MODEL:LAYER",
                       help="the steered layer per model (HF hidden-state index), e.g. smollm2-135m:15 gemma3-270m:9")
    p.add_argument("--source", help="only this source model"), p.add_argument("--target", help="only this target")
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="strengths in units of the layer's mean |h| [-0.2 -0.1 0 0.1 0.2]; with --vector "
                        "--scale stored, the strengths you would give llama.cpp (required)")
    p.add_argument("--methods", nargs="+", default=list(SteerConfig.methods), choices=list(MAP_METHODS),
                   help="alignment methods to transfer with [procrustes affine linear]")
    p.add_argument("--controls", nargs="*", default=list(CONTROLS), choices=list(CONTROLS),
                   help="controls [zero_shot random shuffled]")
    add_fields(p, SteerConfig, _DERIVED_FLAGS, renamed={"tokens": "max_continuation_tokens"})
    add_fields(p.add_argument_group("s2l and many-to-one"), CarrySettings, CARRY_FLAGS)
    p.add_argument("--out", help="output directory (required for a run; with --vector, also write vector_eval.json)")
    return p


# SteerConfig fields whose flags are derived from the dataclass (same names as the experiment YAML's keys)
_DERIVED_FLAGS = {
    "pairs_per_trait": "held-out pairs per trait",
    "traits": "a subset of traits [all]",
    "max_continuation_tokens": "continuation tokens scored per side",
    "k": "procrustes PCA components [the alignment protocol's rule: --variance of both models]",
    "variance": "with no --k: smallest k explaining this fraction of both models' training vectors",
    "bootstrap": "bootstrap resamples",
    "generation_trait": "trait for the generation-length check, '' to skip",
    "generation_prompts": "prompts of the generation-length check",
    "max_new_tokens": "new tokens per prompt in the generation-length check",
    "seed": "split / sampling seed",
    "holdout_trait": "carry each trait with maps fitted without its pairs (leave-one-trait-out)",
    "ridge": "relative ridge of the ridge-affine maps [each method's own: affine 0.1, s2l 1, many_to_one 10]",
    "test_fraction": "share of each trait's pairs held out for scoring",
    "val_fraction": "share of each trait's pairs held out for validation",
    "generation_alpha": "strength of the generation-length check [the largest alpha]",
    "chat_template": "wrap generation prompts in the model's chat template",
    "self_injection_pairs": "pairs for the self-injection exactness check",
}


def config_from_args(args) -> SteerConfig:
    fields = fields_from_args(args, _DERIVED_FLAGS)
    fields.update(traits=fields["traits"] or None, generation_trait=fields["generation_trait"] or None)
    return SteerConfig(alphas=tuple(args.alphas or SteerConfig.alphas), methods=tuple(args.methods),
                       controls=tuple(args.controls), carry=CarrySettings(**fields_from_args(args, CARRY_FLAGS)),
                       **fields)


def run_eval(args) -> int:
    from .results import write_steer_results

    if args.vector or args.run_dir is None:
        return run_vector_eval(args)
    if args.out is None:
        raise SteeringInputError("give --out DIR for the results of a run's evaluation")
    cfg = config_from_args(args)
    refs = find_models([args.run_dir])
    names = sorted(refs)
    layers = (layers_from_sweep(args.sweep, {m: r.n_layers for m, r in refs.items()}) if args.sweep
              else model_layer_pairs(args.layers, names))
    directions = [(s, t) for s in names for t in names
                  if s != t and (args.source in (None, s)) and (args.target in (None, t))]
    from ..locks import DirLock

    with DirLock(args.out, "steer eval"):  # one writer; a read-only --out fails here, before any work
        results = evaluate_steering(args.run_dir, cfg, layers=layers, layer=args.layer, directions=directions,
                                    out_dir=args.out)
        if args.sweep:
            results["config"]["layers_from"] = str(args.sweep)
        for path in write_steer_results(results, args.out):
            print(f"wrote {path}")
    return 0


def run_vector_eval(args) -> int:
    """`steer eval --vector FILE`: the propensity curve of one (multi-layer) vector file on held-out pairs."""
    from ..data import load_pairs
    from ..core.atomic import atomic_write_bytes
    from .apply import steered_propensity
    from .vectors import load_directions

    if not args.vector or not args.model:
        raise SteeringInputError("give a run directory, or --vector FILE and --model NAME to score one vector file")
    directions, _ = load_directions(args.vector)
    if None in directions:
        raise SteeringInputError(f"{args.vector}: a .npy vector has no layer; export it with steer export --layer first")
    trait = args.trait or _file_trait(args.vector)
    if not trait:
        raise SteeringInputError(f"{args.vector} does not name its trait: give --trait")
    alphas = args.alphas or (list(SteerConfig.alphas) if args.scale == "mean-norm" else None)
    if alphas is None:
        raise SteeringInputError("give --alphas for --scale stored: the strengths you would give llama.cpp (FILE:S), "
                        "e.g. --alphas -40 40; or use --scale mean-norm (alphas in units of mean |h|)")
    pairs = load_pairs(args.pairs, traits=[trait])[args.skip:args.skip + args.pairs_per_trait]
    result = steered_propensity(args.model, directions, pairs, alphas, scale=args.scale, n_boot=args.bootstrap,
                                seed=args.seed)
    result.update(vector=str(args.vector), model=args.model, trait=trait, pairs=f"{args.pairs}[{args.skip}:"
                  f"{args.skip + len(pairs)}]")
    print(f"{trait}: {len(pairs)} held-out pairs, layers {result['layers']}, scale {args.scale}")
    print(f"{'alpha':>10} {'propensity':>11} {'95% CI':>18}")
    c = result["curve"]
    for a, m, lo, hi in zip(result["alphas"], c["mean"], c["lo"], c["hi"]):
        print(f"{a:>10g} {m:>11.3f}   [{lo:7.3f}, {hi:7.3f}]")
    sl = result["slope"]
    print(f"slope {stats.format_ci(sl, 4)} per unit alpha (95% CI)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "vector_eval.json", (json.dumps(result, indent=1) + "\n").encode())
        print(f"wrote {out / 'vector_eval.json'}")
    return 0


def _file_trait(path) -> str | None:
    from ..core.vectorfile import is_control_vector_file
    from ..core.vector import SteeringVector

    trait = SteeringVector.load(path).trait if is_control_vector_file(path) else "unknown"
    return None if trait == "unknown" else trait
