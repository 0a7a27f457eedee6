"""The Preference-Vector idea's few-shot question: does a light linear map fitted on one or two concept pairs suffice?

Map quality as a function of how much it is fitted on: the number of training traits n (1, 2, 4, 8, 16,
25 of the 26) and pairs per trait p (2, 8, 32, all of the trait's training pairs), several random trait
subsets per cell. For each cell and subset:

- the map (`affine`: ridge least squares, the "light linear adapter" of the Preference-Vector idea solved in closed form;
  `procrustes`: PCA + similarity Procrustes, k capped by the rows) is fitted on p training pairs of each
  of the n traits (the alignment's split, seed 0);
- it is scored only on traits *not* in the subset (held-out traits, test rows): per-pair centered cosine
  with the target's vectors, centered on the target's mean over the whole training split (one fixed μ_t,
  so cells are comparable; with one training trait the fit rows' own mean would be that trait's mean);
- and, at the trait level, the cosine of each held-out trait's carried vector with the target's own
  trait vector (the direction steering would use), beside the `fit_mean` baseline: the mean of the target
  rows the map was fitted on (what a map that learned nothing but the bias predicts).

`steering_ratio` adds the causal view for a few traits: propensity (`stf_jax.steer.propensity`) under
±alpha with vectors carried by maps of a few cells, as a ratio to the native vector's effect.
Intervals: percentiles over subsets (geometric) and bootstrap over pairs (steering).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import maps
from ..core.stats import format_ci

N_TRAITS = (1, 2, 4, 8, 16, 25)
PAIRS = (2, 8, 32, None)  # None: all of a trait's training pairs


def _cells(n_traits, pairs):
    return [(n, p) for n in n_traits for p in pairs]


def _subset_rows(rng, traits: np.ndarray, w_train: np.ndarray, chosen: Sequence[str], p: int | None) -> np.ndarray:
    w = np.zeros(len(traits), np.float32)
    for t in chosen:
        rows = np.nonzero((w_train > 0) & (traits == t))[0]
        if p is not None and p < len(rows):
            rows = rng.choice(rows, p, replace=False)
        w[rows] = 1.0
    return w


def fewshot_direction(x_s: np.ndarray, x_t: np.ndarray, traits: np.ndarray, w_train: np.ndarray, w_test: np.ndarray,
                      methods: Sequence[str] = ("affine", "procrustes"), n_traits: Sequence[int] = N_TRAITS,
                      pairs: Sequence[int | None] = PAIRS, repeats: int = 5, k: int = 256, ridge: float = 0.1,
                      seed: int = 0) -> dict[str, Any]:
    """Per (method, n, p): held-out-trait centered cosine and trait-vector cosine over `repeats` subsets."""
    names = list(dict.fromkeys(traits.tolist()))
    mu_t = x_t[w_train > 0].mean(0)
    native_tv = {t: x_t[(w_train > 0) & (traits == t)].mean(0) for t in names}
    source_tv = {t: x_s[(w_train > 0) & (traits == t)].mean(0) for t in names}
    cells = []
    for n, p in _cells([n for n in n_traits if n < len(names)], pairs):
        rng = np.random.default_rng([seed, n, 0 if p is None else p])
        reps: dict[str, dict[str, list]] = {m: {"centered": [], "trait_cos": []} for m in methods}
        reps["fit_mean"] = {"centered": [], "trait_cos": []}
        for r in range(repeats):
            chosen = list(rng.choice(names, n, replace=False))
            held = [t for t in names if t not in chosen]
            w = _subset_rows(rng, traits, w_train, chosen, p)
            if w.sum() < 2:
                continue
            test_rows = np.nonzero((w_test > 0) & np.isin(traits, held))[0]
            inputs = np.concatenate([x_s[test_rows], np.stack([source_tv[t] for t in held])])
            tgt_tv = np.stack([native_tv[t] for t in held])
            for m in methods:
                got = maps.fit_apply(m, x_s, x_t, w, inputs, k=k, ridge=ridge, seed=seed + r)
                cen = maps.centered_cosines(got[:len(test_rows)], x_t[test_rows], mu_t)[1]
                tv = maps.centered_cosines(got[len(test_rows):], tgt_tv, np.zeros_like(mu_t))[0]
                reps[m]["centered"].append(float(cen.mean()))
                reps[m]["trait_cos"].append(float(tv.mean()))
            fit_mean = x_t[w > 0].mean(0)
            reps["fit_mean"]["centered"].append(0.0)
            reps["fit_mean"]["trait_cos"].append(float(maps.centered_cosines(
                np.broadcast_to(fit_mean, tgt_tv.shape), tgt_tv, np.zeros_like(mu_t))[0].mean()))
        for m, v in reps.items():
            c, tv = np.array(v["centered"]), np.array(v["trait_cos"])
            cells.append({"method": m, "n_traits": n, "pairs_per_trait": p, "repeats": int(len(c)),
                          "centered": _summ(c), "trait_cos": _summ(tv)})
    return {"cells": cells}


def _summ(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    lo, hi = np.percentile(x, [2.5, 97.5]) if x.size > 1 else (x[0], x[0])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "values": x.tolist()}


def steering_ratio(model, layer_t: int, x_s, x_t, traits: np.ndarray, w_train, w_test, table_pairs,
                   eval_traits: Sequence[str], settings: Sequence[tuple[int, int | None]], alpha: float = 0.2,
                   method: str = "affine", n_pairs: int = 6, repeats: int = 2, k: int = 256, ridge: float = 0.1,
                   seed: int = 0, max_tokens: int = 16, log=print) -> list[dict[str, Any]]:
    """Propensity effect ratio (carried / native) on held-out pairs of `eval_traits`, for maps fitted on n
    traits × p pairs that never include the evaluated trait. Effect = (prop(+alpha) − prop(−alpha)) / 2."""
    from ..steer.propensity import PrefixScorer
    from ..core.stats import mean_ci

    names = list(dict.fromkeys(traits.tolist()))
    rng0 = np.random.default_rng([seed, 99])
    out = []
    scorers = {}
    for t in eval_traits:
        rows = np.nonzero((w_test > 0) & (traits == t))[0][:n_pairs]
        ps = [table_pairs[i] for i in rows]
        scorers[t] = PrefixScorer(model, layer_t, [p.prompt for p in ps], [p.positive for p in ps],
                                  [p.negative for p in ps], max_tokens, width=128)
    norm = [s.mean_norm() for s in scorers.values()]
    scale = sum(a for a, _ in norm) / sum(b for _, b in norm)

    def effect(sc, v):
        v = np.asarray(v, np.float32) / np.linalg.norm(v) * scale
        return (sc.propensity(v, alpha) - sc.propensity(v, -alpha)) / 2.0

    native = {t: effect(scorers[t], x_t[(w_train > 0) & (traits == t)].mean(0)) for t in eval_traits}
    for n, p in settings:
        for t in eval_traits:
            others = [u for u in names if u != t]
            for r in range(repeats if n < len(others) else 1):
                chosen = list(rng0.choice(others, min(n, len(others)), replace=False))
                w = _subset_rows(rng0, traits, w_train, chosen, p)
                v = maps.fit_apply(method, x_s, x_t, w, x_s[(w_train > 0) & (traits == t)].mean(0)[None],
                                   k=k, ridge=ridge, seed=seed + r)[0]
                e = effect(scorers[t], v)
                nat = native[t]
                ratio = float(e.mean() / nat.mean()) if nat.mean() != 0 else float("nan")
                out.append({"trait": t, "n_traits": n, "pairs_per_trait": p, "repeat": r, "ratio": ratio,
                            "effect": mean_ci(e, 1000, seed), "native_effect": mean_ci(nat, 1000, seed)})
        done = [o["ratio"] for o in out if o["n_traits"] == n and o["pairs_per_trait"] == p]
        log(f"  steering ratio n={n} p={p if p else 'all'}: mean {np.nanmean(done):.2f} over {len(done)}")
    return out


def run_fewshot(run_dir: str | Path, layers: dict[tuple[str, str], tuple[int, int]],
                methods: Sequence[str] = ("affine", "procrustes"), n_traits: Sequence[int] = N_TRAITS,
                pairs: Sequence[int | None] = PAIRS, repeats: int = 5, seed: int = 0,
                steer_traits: Sequence[str] = (), steer_settings: Sequence[tuple[int, int | None]] = (),
                steer_alpha: float = 0.2, log=print) -> dict[str, Any]:
    from ..extract.rundir import find_models, load_vectors, make_trials, pair_table, zero_rows

    t0 = time.perf_counter()
    refs = find_models([run_dir])
    names = sorted(refs)
    table, orders = pair_table([refs[m] for m in names])
    traits = np.asarray(table.traits)
    res: dict[str, Any] = {"run_dir": str(run_dir), "methods": list(methods), "n_traits": list(n_traits),
                           "pairs": [p if p is not None else "all" for p in pairs], "repeats": repeats,
                           "seed": seed, "directions": []}
    for (s, t), (ls, lt) in layers.items():
        x_s = load_vectors(refs[s], ls, orders[refs[s].run_dir])
        x_t = load_vectors(refs[t], lt, orders[refs[t].run_dir])
        trials = make_trials(table, 1, seed, 0.2, 0.1, exclude=zero_rows(x_s) | zero_rows(x_t))
        w_train, w_test = trials.train[0], trials.test[0]
        d = fewshot_direction(x_s, x_t, traits, w_train, w_test, methods, n_traits, pairs, repeats, seed=seed)
        d.update({"source": s, "target": t, "layer_source": ls, "layer_target": lt,
                  "train_pairs_per_trait": int(np.median([((w_train > 0) & (traits == u)).sum()
                                                          for u in table.trait_names]))})
        for c in d["cells"]:
            if c["method"] == methods[0] and c["pairs_per_trait"] in (2, None):
                log(f"{s}->{t} {c['method']} n={c['n_traits']} p={c['pairs_per_trait'] or 'all'}: centered "
                    f"{c['centered']['mean']:.3f}, trait cos {c['trait_cos']['mean']:.3f}")
        if steer_traits:
            from ..models.loading import load_model

            model = load_model(t)
            d["steering"] = steering_ratio(model, lt, x_s, x_t, traits, w_train, w_test, table.pairs, steer_traits,
                                           steer_settings, steer_alpha, methods[0], seed=seed, log=log)
        res["directions"].append(d)
    res["seconds"] = time.perf_counter() - t0
    return res


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Few-shot maps (the Preference-Vector idea): quality vs training traits and pairs per trait", "",
             f"Run `{res['run_dir']}`; {res['repeats']} random trait subsets per cell; scored on held-out traits "
             "only. Centered cosine per pair (μ_t fixed: the target's training mean) and trait-vector cosine "
             "to the target's own vector; mean [2.5, 97.5 percentile over subsets].", ""]
    for d in res["directions"]:
        lines += [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']}; "
                  f"'all' = {d['train_pairs_per_trait']} pairs per trait)", "",
                  "| method | traits | " + " | ".join(f"p={p}" for p in res["pairs"]) + " |",
                  "| --- | --- |" + " --- |" * len(res["pairs"])]
        for m in (*res["methods"], "fit_mean"):
            for n in res["n_traits"]:
                cells = {(c["pairs_per_trait"] or "all"): c for c in d["cells"] if c["method"] == m and c["n_traits"] == n}
                if not cells:
                    continue
                key = "trait_cos" if m == "fit_mean" else "centered"
                lines.append(f"| {m} ({'trait-vector cos' if m == 'fit_mean' else 'centered'}) | {n} | " + " | ".join(
                    format_ci(cells[p][key], 3)
                    if p in cells else "–" for p in res["pairs"]) + " |")
        lines += ["", "Trait-vector cosine to the target's own vector (held-out traits):", "",
                  "| method | traits | " + " | ".join(f"p={p}" for p in res["pairs"]) + " |",
                  "| --- | --- |" + " --- |" * len(res["pairs"])]
        for m in res["methods"]:
            for n in res["n_traits"]:
                cells = {(c["pairs_per_trait"] or "all"): c for c in d["cells"] if c["method"] == m and c["n_traits"] == n}
                if cells:
                    lines.append(f"| {m} | {n} | " + " | ".join(
                        f"{cells[p]['trait_cos']['mean']:.3f}" if p in cells else "–" for p in res["pairs"]) + " |")
        if d.get("steering"):
            lines += ["", "Steering (propensity) effect ratio, carried / native, held-out trait never in the fit:", "",
                      "| traits | pairs per trait | mean ratio | per trait |", "| --- | --- | --- | --- |"]
            keys = list(dict.fromkeys((o["n_traits"], o["pairs_per_trait"]) for o in d["steering"]))
            for n, p in keys:
                rows = [o for o in d["steering"] if o["n_traits"] == n and o["pairs_per_trait"] == p]
                per = {}
                for o in rows:
                    per.setdefault(o["trait"], []).append(o["ratio"])
                lines.append(f"| {n} | {p or 'all'} | {np.nanmean([o['ratio'] for o in rows]):.2f} | "
                             + ", ".join(f"{t} {np.nanmean(v):.2f}" for t, v in per.items()) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
