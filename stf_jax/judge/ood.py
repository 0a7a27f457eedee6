"""Out-of-distribution evaluation: maps fitted on the shipped pairs, scored on pairs written differently.

`stf_jax/data/ood_pairs/` holds contrast pairs in other registers and formats (dialogue turns, e-mails,
reviews, chat messages, forum posts) for 8 of the shipped traits and 2 traits that are not among the 26;
they are never used for fitting. For each directed model pair at the given layers:

- maps (each method) are fitted once on the shipped run's training split (the alignment's split, seed 0);
- in-distribution: centered cosine of T(v_s) with v_t on the shipped *test* rows (μ_t = the target's
  training mean, as in `stf_jax.align`);
- out-of-distribution: the same maps and the same μ_t on every OOD pair, split into traits seen in the
  fit and traits unseen by any map;
- baselines: `identity` (zero-shot), `mean_target` (predict μ_t: centered cosine 0 by construction, its raw
  cosine is reported) and `trait_mean` (the target's shipped training mean of the pair's trait: undefined
  for unseen traits). `trait_mean` needs no map; a map is worth something only above it.
- trait level: cosine of the carried OOD trait vector (mean of the trait's OOD source vectors, mapped) with
  the target's own OOD trait vector: what steering would use.

Intervals: 95% bootstrap over pairs (within traits).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import maps

BASELINES = ("identity", "mean_target", "trait_mean")


def _ci(x: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    from ..core.stats import mean_ci

    x = np.asarray(x, np.float64)
    if x.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    return mean_ci(x, n_boot, seed, groups)


def _load(run_dir, names: Sequence[str] | None = None):
    from ..extract.rundir import find_models, pair_table

    refs = find_models([run_dir])
    names = sorted(refs) if names is None else list(names)
    table, orders = pair_table([refs[m] for m in names])
    return refs, table, orders


def ood_evaluation(shipped_run: str | Path, ood_run: str | Path,
                   layers: dict[tuple[str, str], tuple[int, int]],
                   methods: Sequence[str] = ("procrustes", "affine", "linear"), k: int = 256, ridge: float = 0.1,
                   seed: int = 0, bootstrap: int = 1000, log=print) -> dict[str, Any]:
    """In-distribution vs OOD centered cosine of every map and baseline, per directed model pair."""
    from ..extract.rundir import AlignInputError, load_vectors, make_trials, zero_rows

    t0 = time.perf_counter()
    refs, table, orders = _load(shipped_run)
    o_refs, o_table, o_orders = _load(ood_run)
    out: dict[str, Any] = {"shipped_run": str(shipped_run), "ood_run": str(ood_run), "methods": list(methods),
                           "baselines": list(BASELINES), "k": k, "ridge": ridge, "seed": seed, "directions": []}
    shipped_traits = list(table.trait_names)
    o_traits = np.asarray(o_table.traits)
    seen = [t for t in o_table.trait_names if t in shipped_traits]
    unseen = [t for t in o_table.trait_names if t not in shipped_traits]
    out["ood_traits"] = {"seen": seen, "unseen": unseen,
                         "pairs": {t: int((o_traits == t).sum()) for t in o_table.trait_names}}
    for (s, t), (ls, lt) in layers.items():
        for m in (s, t):
            if m not in o_refs:
                raise AlignInputError(f"model {m!r} is not in the OOD run {ood_run}; it has {sorted(o_refs)}")
        x_s = load_vectors(refs[s], ls, orders[refs[s].run_dir])
        x_t = load_vectors(refs[t], lt, orders[refs[t].run_dir])
        o_s = load_vectors(o_refs[s], ls, o_orders[o_refs[s].run_dir])
        o_t = load_vectors(o_refs[t], lt, o_orders[o_refs[t].run_dir])
        trials = make_trials(table, 1, seed, 0.2, 0.1, exclude=zero_rows(x_s) | zero_rows(x_t))
        w_train, w_val, w_test = trials.train[0], trials.val[0], trials.test[0]
        traits = np.asarray(table.traits)
        test_rows = np.nonzero(w_test > 0)[0]
        mu_t = x_t[w_train > 0].mean(0)
        trait_means = {tr: x_t[(w_train > 0) & (traits == tr)].mean(0) for tr in shipped_traits}
        o_names = list(o_table.trait_names)
        o_means_s = np.stack([o_s[o_traits == tr].mean(0) for tr in o_names])
        native_tv = np.stack([o_t[o_traits == tr].mean(0) for tr in o_names])
        preds_id, preds_ood, carried_tv = {}, {}, {}
        n_id, n_o = len(test_rows), len(o_s)
        for meth in ("identity", *methods):
            got = maps.fit_apply(meth, x_s, x_t, w_train, np.concatenate([x_s[test_rows], o_s, o_means_s]),
                                 w_val=w_val, k=k, ridge=ridge, seed=seed)
            preds_id[meth], preds_ood[meth], carried_tv[meth] = got[:n_id], got[n_id:n_id + n_o], got[n_id + n_o:]
        preds_id["mean_target"] = np.broadcast_to(mu_t, (len(test_rows), len(mu_t)))
        preds_ood["mean_target"] = np.broadcast_to(mu_t, (len(o_t), len(mu_t)))
        preds_id["trait_mean"] = np.stack([trait_means[tr] for tr in traits[test_rows]])
        preds_ood["trait_mean"] = np.stack([trait_means.get(tr, np.full_like(mu_t, np.nan)) for tr in o_traits])
        entry: dict[str, Any] = {"source": s, "target": t, "layer_source": ls, "layer_target": lt,
                                 "n_train": int(w_train.sum()), "n_test": int(len(test_rows)),
                                 "n_ood": int(len(o_t)), "conditions": {}}
        g_id = np.unique(traits[test_rows], return_inverse=True)[1]
        for c in ("identity", *methods, "mean_target", "trait_mean"):
            raw_id, cen_id = maps.centered_cosines(preds_id[c], x_t[test_rows], mu_t)
            ok = np.isfinite(preds_ood[c]).all(1)
            raw_o, cen_o = maps.centered_cosines(np.nan_to_num(preds_ood[c]), o_t, mu_t)
            row: dict[str, Any] = {"in_distribution": {"centered": _ci(cen_id, g_id, bootstrap, seed),
                                                       "raw": _ci(raw_id, g_id, bootstrap, seed)}}
            for name, sel in (("ood_seen", np.isin(o_traits, seen)), ("ood_unseen", np.isin(o_traits, unseen)),
                              ("ood_all", np.ones(len(o_traits), bool))):
                sel = sel & ok
                g = np.unique(o_traits[sel], return_inverse=True)[1]
                row[name] = {"centered": _ci(cen_o[sel], g, bootstrap, seed), "raw": _ci(raw_o[sel], g, bootstrap, seed),
                             "n": int(sel.sum())}
            row["ood_per_trait"] = {tr: float(cen_o[(o_traits == tr) & ok].mean()) if ((o_traits == tr) & ok).any()
                                    else None for tr in o_table.trait_names}
            # trait level: carried OOD trait vector vs the target's own OOD trait vector
            if c in carried_tv:
                cos = maps.centered_cosines(carried_tv[c], native_tv, np.zeros_like(mu_t))[0]
                row["ood_trait_vector_cosine"] = dict(zip(o_names, map(float, cos)))
            entry["conditions"][c] = row
        out["directions"].append(entry)
        log(f"{s}->{t} (layers {ls}->{lt}): centered cosine in-distribution / OOD seen / OOD unseen: "
            + ", ".join(f"{c} {r['in_distribution']['centered']['mean']:.3f}/{r['ood_seen']['centered']['mean']:.3f}/"
                        f"{r['ood_unseen']['centered']['mean']:.3f}" for c, r in entry["conditions"].items()))
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(res: dict[str, Any]) -> str:
    from ..core.stats import format_ci

    def f(ci):
        return format_ci(ci, 3)

    seen, unseen = res["ood_traits"]["seen"], res["ood_traits"]["unseen"]
    lines = ["# Out-of-distribution pairs: maps fitted on the shipped set", "",
             f"Shipped run `{res['shipped_run']}` (fit on its training split), OOD run `{res['ood_run']}` "
             f"({sum(res['ood_traits']['pairs'].values())} pairs; seen traits: {', '.join(seen)}; unseen: "
             f"{', '.join(unseen)}). Centered cosine of T(v_s) with v_t (μ_t = target training mean), mean and "
             "95% bootstrap interval over pairs.", ""]
    for d in res["directions"]:
        lines += [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']})", "",
                  "| condition | in-distribution (shipped test) | OOD, seen traits | OOD, unseen traits | "
                  "OOD − in-dist. (seen) | OOD trait-vector cosine (mean) |", "| --- | --- | --- | --- | --- | --- |"]
        for c, r in d["conditions"].items():
            drop = r["ood_seen"]["centered"]["mean"] - r["in_distribution"]["centered"]["mean"]
            tv = r.get("ood_trait_vector_cosine")
            lines.append(f"| {c} | {f(r['in_distribution']['centered'])} | {f(r['ood_seen']['centered'])} | "
                         f"{f(r['ood_unseen']['centered'])} | {drop:+.3f} | "
                         f"{np.mean(list(tv.values())):.3f} |" if tv else
                         f"| {c} | {f(r['in_distribution']['centered'])} | {f(r['ood_seen']['centered'])} | "
                         f"{f(r['ood_unseen']['centered'])} | {drop:+.3f} | – |")
        lines.append("")
        lines += ["Per OOD trait (centered cosine):", "",
                  "| trait | " + " | ".join(d["conditions"]) + " |", "|" + " --- |" * (len(d["conditions"]) + 1)]
        for tr in res["ood_traits"]["pairs"]:
            vals = [d["conditions"][c]["ood_per_trait"].get(tr) for c in d["conditions"]]
            lines.append(f"| {tr}{' (unseen)' if tr in unseen else ''} | "
                         + " | ".join("–" if v is None or not np.isfinite(v) else f"{v:.3f}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
