"""The report's first screen: one sentence and one figure saying how well transfer worked, geometrically and
behaviourally, against the baselines.

Geometric evidence, in order of preference: the judge OOD evaluation (in-distribution and out-of-distribution
centered cosine of every map and baseline), else the alignment results (centered test cosine). Behavioural
evidence: the independent-judge evaluation (pooled judge effect of transferred vectors as a ratio to the
native vector's), else the steering evaluation (propensity effect ratio). Whatever is missing is said to be
missing rather than guessed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.stats import format_ci
from . import figures as F
from .load import ExperimentResults

MAPS = ("procrustes", "affine", "affine_tokens", "linear", "lowrank", "mlp")
CONTROLS = ("zero_shot", "random", "shuffled")


def _short(name: str) -> str:
    return name.split("-")[0]


def _dir(d: dict) -> str:
    return f"{_short(d['source'])}→{_short(d['target'])}"


def geometric(run: ExperimentResults) -> dict[str, Any] | None:
    """{"source": ..., "rows": [{direction, best, best_value, trait_mean, best_ood, trait_mean_ood, ...}], "all": {...}}"""
    ood = run.judge.get("ood")
    if ood:
        rows, allv = [], {}
        for d in ood.get("directions", []):
            conds = d.get("conditions", {})
            maps = [c for c in conds if c in MAPS]
            if not maps:
                continue
            best = max(maps, key=lambda c: F.num(conds[c]["in_distribution"]["centered"]["mean"]))
            get = lambda c, k: F.num(((conds.get(c) or {}).get(k) or {}).get("centered", {}).get("mean"))  # noqa: E731
            rows.append({"direction": _dir(d), "best": best, "in": get(best, "in_distribution"),
                         "ood": get(best, "ood_seen"), "ood_unseen": get(best, "ood_unseen"),
                         "trait_mean_in": get("trait_mean", "in_distribution"), "trait_mean_ood": get("trait_mean", "ood_seen"),
                         "identity_in": get("identity", "in_distribution")})
            for c in conds:
                allv.setdefault(c, []).append((_dir(d), get(c, "in_distribution"), get(c, "ood_seen"), get(c, "ood_unseen")))
        return {"source": "ood", "rows": rows, "all": allv} if rows else None
    rows, allv = [], {}
    for name, res in run.align.items():
        for d in res.get("directions", []):
            ms = d.get("methods", {})
            maps = [m for m in ms if m in MAPS and math.isfinite(F.num((ms[m].get("test_centered") or {}).get("mean")))]
            if not maps:
                continue
            val = lambda m: F.num((ms.get(m, {}).get("test_centered") or {}).get("mean"))  # noqa: E731
            best = max(maps, key=val)
            rows.append({"direction": f"{_dir(d)} ({name})", "best": best, "in": val(best), "ood": float("nan"),
                         "ood_unseen": float("nan"), "trait_mean_in": val("trait_mean"), "trait_mean_ood": float("nan"),
                         "identity_in": val("identity")})
            for m in ms:
                allv.setdefault(m, []).append((f"{_dir(d)} ({name})", val(m), float("nan"), float("nan")))
        break  # the first alignment (layer -6 before sweep, by name) is enough for the first screen
    return {"source": "align", "rows": rows, "all": allv} if rows else None


def behavioural(run: ExperimentResults) -> dict[str, Any] | None:
    """{"source": "judge" | "steer", "rows": [{direction, condition, ratio {mean, lo, hi}, kind}]}"""
    beh = run.judge.get("behaviour")
    if beh:
        rows = []
        for d in beh.get("directions", []):
            m = (d.get("modes") or {}).get("greedy")
            if not m:
                continue
            for c, v in m["conditions"].items():
                if c == "native":
                    continue
                rows.append({"direction": _dir(d), "condition": c, "ratio": v["pooled"].get("ratio_to_native"),
                             "kind": "control" if c in CONTROLS else "transferred",
                             "guard": f"{v['pooled']['n_guard_pass']}/{v['pooled']['n_traits']}",
                             "alpha": d.get("alpha"), "n_traits": v["pooled"]["n_traits"]})
            rows.append({"direction": _dir(d), "condition": "native", "ratio": {"mean": 1.0, "lo": 1.0, "hi": 1.0},
                         "kind": "native", "std_effect": m["conditions"]["native"]["pooled"]["std_effect"],
                         "guard": f"{m['conditions']['native']['pooled']['n_guard_pass']}/"
                                  f"{m['conditions']['native']['pooled']['n_traits']}", "alpha": d.get("alpha")})
        return {"source": "judge", "rows": rows} if rows else None
    st = run.steer
    if st:
        rows = []
        for d in st.get("directions", []):
            for c, v in (d.get("conditions") or {}).items():
                if c == "native":
                    continue
                s = v.get("summary") or {}
                rows.append({"direction": _dir(d), "condition": c, "ratio": s.get("effect_ratio") or s.get("slope_ratio"),
                             "kind": v.get("kind", "control")})
        return {"source": "steer", "rows": rows} if rows else None
    return None


def _rng(vals) -> str:
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return "—"
    lo, hi = min(vals), max(vals)
    if abs(hi - lo) < 0.005:
        return f"{lo:.2f}"
    return f"{lo:.2f} to {hi:.2f}" if lo < 0 else f"{lo:.2f}–{hi:.2f}"


_ci = format_ci  # 'mean [lo, hi]', the one format (core.stats)


def _broken_controls(ctl: list[dict]) -> str:
    """' (...)' naming the controls whose steered text failed the fluency guard for most traits: their
    ratio measures broken text, not the trait, and the reader of the first screen must know it."""
    broken = []
    for r in ctl:
        passed, _, total = str(r.get("guard", "")).partition("/")
        if passed.isdigit() and total.isdigit() and int(passed) * 2 < int(total):
            broken.append(f"`{r['condition']}` in {r['direction']} ({r['guard']})")
    return f" (the fluency guard failed for most traits of {', '.join(broken)}: their text broke)" if broken else ""


def sentence(run: ExperimentResults) -> str:
    g, b = geometric(run), behavioural(run)
    parts = []
    if g:
        best = sorted({r["best"] for r in g["rows"]})
        parts.append(
            f"**Geometrically**, the best map ({', '.join(f'`{m}`' for m in best)}) carried held-out pairs to a centered "
            f"cosine of {_rng([r['in'] for r in g['rows']])} with the target's own vectors, against "
            f"{_rng([r['trait_mean_in'] for r in g['rows']])} for the `trait_mean` baseline and "
            f"{_rng([r['identity_in'] for r in g['rows']])} zero-shot"
            + (f"; on out-of-distribution pairs it kept {_rng([r['ood'] for r in g['rows']])} (unseen traits "
               f"{_rng([r['ood_unseen'] for r in g['rows']])}) while `trait_mean` fell to "
               f"{_rng([r['trait_mean_ood'] for r in g['rows']])}" if g["source"] == "ood" else "")
            + ".")
    else:
        parts.append("No geometric results in this run.")
    if b:
        tr = [r for r in b["rows"] if r["kind"] == "transferred" and r.get("ratio")]
        ctl = [r for r in b["rows"] if r["kind"] == "control" and r.get("ratio")]
        if tr:
            best_by_dir = {}
            for r in tr:
                if r["direction"] not in best_by_dir or F.num(r["ratio"]["mean"]) > F.num(best_by_dir[r["direction"]]["ratio"]["mean"]):
                    best_by_dir[r["direction"]] = r
            what = ("moved the independent judges of the generated text by" if b["source"] == "judge"
                    else "moved propensity by")
            best_txt = "; ".join(f"{r['direction']} `{r['condition']}` {_ci(r['ratio'])}"
                                 + (f", pooled over {r['n_traits']} judged traits at a = {r.get('alpha')}"
                                    if r.get("n_traits") else "") for r in best_by_dir.values())
            unit = "prompts" if b["source"] == "judge" else "pairs"
            has_ci = any(math.isfinite(F.num(r["ratio"].get("lo"))) for r in best_by_dir.values())
            ctl_txt = ", ".join(f"`{c}` {_rng([F.num(r['ratio']['mean']) for r in ctl if r['condition'] == c])}"
                                for c in dict.fromkeys(r["condition"] for r in ctl))
            parts.append(f"**Behaviourally**, transferred vectors {what} this fraction of the native vector's effect "
                         f"({best_txt}" + (f"; 95 % CI over {unit})" if has_ci else ")") + (f", against {ctl_txt} for the controls" if ctl_txt else "")
                         + _broken_controls(ctl) + ".")
    else:
        parts.append("No behavioural results in this run.")
    return " ".join(parts)


def figure(run: ExperimentResults):
    """Left: centered cosine per map and baseline (in-distribution, OOD); right: behavioural ratio to native."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    g, b = geometric(run), behavioural(run)
    fig = Figure(figsize=(11, 3.3))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    ax = axes[0]
    if g:
        conds = [c for c in F.ordered(list(g["all"]), F.METHOD_ORDER)]
        keys = [(1, "in-distribution", "#4c72b0")] + ([(2, "OOD, seen traits", "#dd8452"),
                                                       (3, "OOD, unseen traits", "#55a868")] if g["source"] == "ood" else [])
        w = 0.8 / len(keys)
        for j, (k, label, col) in enumerate(keys):
            vals = [np.array([v[k] for v in g["all"][c]], float) for c in conds]
            means = [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals]
            lo = [m - np.nanmin(v) if np.isfinite(v).any() else 0 for m, v in zip(means, vals)]
            hi = [np.nanmax(v) - m if np.isfinite(v).any() else 0 for m, v in zip(means, vals)]
            x = np.arange(len(conds)) + (j - (len(keys) - 1) / 2) * w
            ax.bar(x, means, w, yerr=[lo, hi], capsize=2, color=col, label=label, edgecolor="black", linewidth=0.3)
        ax.set_xticks(np.arange(len(conds)))
        ax.set_xticklabels(conds, rotation=25, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel("centered cosine", fontsize=9)
        top = ax.get_ylim()[1]
        ax.set_ylim(top=top * 1.25)
        ax.legend(fontsize=7, loc="upper left", ncol=3)
        ax.set_title("Geometry: maps vs baselines (bar = mean of directions, whiskers = range)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no geometric results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax = axes[1]
    if b:
        rows = [r for r in b["rows"] if r.get("ratio")]
        conds = F.ordered(list(dict.fromkeys(r["condition"] for r in rows)), F.CONDITION_ORDER)
        dirs = list(dict.fromkeys(r["direction"] for r in rows))
        w = 0.8 / len(dirs)
        for j, dname in enumerate(dirs):
            got = {r["condition"]: r["ratio"] for r in rows if r["direction"] == dname}
            m = [F.num(got.get(c, {}).get("mean")) for c in conds]
            lo = [max(mm - F.num(got.get(c, {}).get("lo", mm)), 0) if math.isfinite(F.num(got.get(c, {}).get("lo"))) else 0
                  for mm, c in zip(m, conds)]
            hi = [max(F.num(got.get(c, {}).get("hi", mm)) - mm, 0) if math.isfinite(F.num(got.get(c, {}).get("hi"))) else 0
                  for mm, c in zip(m, conds)]
            x = np.arange(len(conds)) + (j - (len(dirs) - 1) / 2) * w
            ax.bar(x, m, w, yerr=[lo, hi], capsize=2, color=[F.color(c) for c in conds], edgecolor="black",
                   linewidth=0.4, hatch=None if j == 0 else "//", alpha=1.0 if j == 0 else 0.6, label=dname)
        ax.set_xticks(np.arange(len(conds)))
        ax.set_xticklabels(conds, rotation=25, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axhline(1, color="black", linewidth=0.6, linestyle=":")
        ax.set_ylabel("effect / native effect", fontsize=9)
        ax.set_ylim(top=max(ax.get_ylim()[1], 1.0) * 1.2)
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        src = "independent judges, pooled over traits" if b["source"] == "judge" else "propensity"
        ax.set_title(f"Behaviour: {src} (95 % CI)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no behavioural results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
