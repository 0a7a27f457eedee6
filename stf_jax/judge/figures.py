"""Figures of the judge evaluations (matplotlib, Agg): behaviour ratios, OOD vs in-distribution, few-shot
curves. Each function takes the results dict (as written to JSON) and returns a Figure, or saves it when
given a path. `python -m stf_jax.judge figures OUT` redraws every figure found under OUT."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"native": "#2f2f2f", "procrustes": "#1f77b4", "affine": "#ff7f0e", "linear": "#2ca02c",
          "lowrank": "#17becf", "mlp": "#9467bd", "zero_shot": "#8c564b", "identity": "#8c564b",
          "random": "#7f7f7f", "shuffled": "#e377c2", "mean_target": "#bcbd22", "trait_mean": "#d62728",
          "fit_mean": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _err(ci: dict | None) -> tuple[float, float, float]:
    if not ci:
        return float("nan"), 0.0, 0.0
    m, lo, hi = _num(ci.get("mean")), _num(ci.get("lo")), _num(ci.get("hi"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return m, 0.0, 0.0
    return m, max(m - lo, 0.0), max(hi - m, 0.0)


def _save(fig, path):
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def behaviour_axes(ax, res: dict[str, Any], mode: str = "greedy", key: str = "std_effect") -> None:
    """Pooled standardized judge effect (or ratio) per condition, one group of bars per direction."""
    dirs = [d for d in res.get("directions", []) if mode in d.get("modes", {})]
    conds = list(dict.fromkeys(c for d in dirs for c in d["modes"][mode]["conditions"]))
    width = 0.8 / max(len(dirs), 1)
    for j, d in enumerate(dirs):
        vals = [_err(d["modes"][mode]["conditions"].get(c, {}).get("pooled", {}).get(key)) for c in conds]
        x = np.arange(len(conds)) + (j - (len(dirs) - 1) / 2) * width
        ax.bar(x, [v[0] for v in vals], width, yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]),
               capsize=2, label=f"{d['source']} → {d['target']} (a={d.get('alpha')})",
               color=[COLORS.get(c, "#999") for c in conds], alpha=1.0 if j == 0 else 0.55,
               edgecolor="black", linewidth=0.5, hatch=None if j == 0 else "//")
    ax.set_xticks(np.arange(len(conds)))
    ax.set_xticklabels(conds, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("judge effect (SD of unsteered)" if key == "std_effect" else "ratio to native")
    ax.legend(fontsize=7, loc="upper right")


def behaviour_figure(res: dict[str, Any], path=None, mode: str = "greedy"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    behaviour_axes(ax, res, mode)
    ax.set_title("Independent judges: effect of steering at ±a, pooled over traits (95% CI over prompts)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def behaviour_traits_figure(res: dict[str, Any], path=None, mode: str = "greedy"):
    """Per trait and direction: judge effect of each condition (bars with CIs)."""
    plt = _plt()
    dirs = [d for d in res.get("directions", []) if mode in d.get("modes", {})]
    traits = res["config"]["traits"]
    fig, axes = plt.subplots(len(dirs), 1, figsize=(10, 3.0 * max(len(dirs), 1)), squeeze=False)
    for ax, d in zip(axes[:, 0], dirs):
        conds = list(d["modes"][mode]["conditions"])
        w = 0.8 / len(conds)
        for i, c in enumerate(conds):
            vals = []
            for t in traits:
                r = d["modes"][mode]["conditions"][c]["traits"][t]
                sd = d["modes"][mode]["unsteered"][t]["sd"] or 1.0
                m, lo, hi = _err(r["effect"])
                vals.append((m / sd, lo / sd, hi / sd, r["guard"]))
            x = np.arange(len(traits)) + (i - (len(conds) - 1) / 2) * w
            ax.bar(x, [v[0] for v in vals], w, yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]),
                   capsize=1.5, color=COLORS.get(c, "#999"), label=c, edgecolor="black", linewidth=0.3)
            for xi, v in zip(x, vals):
                if not v[3]:
                    ax.text(xi, v[0], "×", ha="center", va="bottom", fontsize=8, color="red")
        ax.set_xticks(np.arange(len(traits)))
        ax.set_xticklabels(traits, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel("effect / SD unsteered", fontsize=8)
        ax.set_title(f"{d['source']} → {d['target']} (a = {d.get('alpha')}); × = fluency guard failed", fontsize=9)
        ax.legend(fontsize=7, ncol=len(conds), loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def ood_axes(ax, res: dict[str, Any]) -> None:
    """Centered cosine in-distribution vs OOD (seen / unseen traits) per condition, first direction solid."""
    dirs = res.get("directions", [])
    conds = list(dict.fromkeys(c for d in dirs for c in d["conditions"]))
    groups = [("in_distribution", "in-distribution"), ("ood_seen", "OOD, seen traits"),
              ("ood_unseen", "OOD, unseen traits")]
    width = 0.8 / (len(groups) * max(len(dirs), 1))
    k = 0
    shades = ["#4c72b0", "#dd8452", "#55a868"]
    for j, d in enumerate(dirs):
        for g, (key, label) in enumerate(groups):
            vals = [_err(d["conditions"].get(c, {}).get(key, {}).get("centered")) for c in conds]
            x = np.arange(len(conds)) + (k - (len(groups) * len(dirs) - 1) / 2) * width
            ax.bar(x, [v[0] for v in vals], width, yerr=np.array([[v[1] for v in vals], [v[2] for v in vals]]),
                   capsize=1.5, color=shades[g], alpha=1.0 if j == 0 else 0.5, edgecolor="black", linewidth=0.3,
                   label=f"{label} ({d['source'].split('-')[0]}→{d['target'].split('-')[0]})")
            k += 1
    ax.set_xticks(np.arange(len(conds)))
    ax.set_xticklabels(conds, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("centered cosine")
    ax.legend(fontsize=6, ncol=2, loc="upper left")


def ood_figure(res: dict[str, Any], path=None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ood_axes(ax, res)
    ax.set_title("Maps fitted on the shipped pairs: in-distribution vs out-of-distribution pairs", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def fewshot_figure(res: dict[str, Any], path=None, key: str = "centered"):
    """Map quality vs training traits, one line per pairs-per-trait setting, per method and direction."""
    plt = _plt()
    dirs = res.get("directions", [])
    methods = res.get("methods", [])
    fig, axes = plt.subplots(len(dirs), 2, figsize=(10, 3.2 * max(len(dirs), 1)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, d in zip(axes, dirs):
        for ax, key_ in zip(row, ("centered", "trait_cos")):
            for mi, m in enumerate([*methods, "fit_mean"] if key_ == "trait_cos" else methods):
                for pi, p in enumerate(res["pairs"]):
                    pp = None if p == "all" else p
                    cells = sorted([c for c in d["cells"] if c["method"] == m and c["pairs_per_trait"] == pp],
                                   key=lambda c: c["n_traits"])
                    if not cells or (m == "fit_mean" and pi != len(res["pairs"]) - 1):
                        continue
                    x = [c["n_traits"] for c in cells]
                    y = np.array([_err(c[key_]) for c in cells])
                    style = "-" if mi == 0 else ("--" if m != "fit_mean" else ":")
                    color = "#d62728" if m == "fit_mean" else cmap(pi / max(len(res["pairs"]) - 1, 1))
                    ax.errorbar(x, y[:, 0], yerr=y[:, 1:].T, fmt=style + "o", ms=3, capsize=2, color=color,
                                label=f"{m}, p={p}" if m != "fit_mean" else "fit_mean baseline (all p)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(res["n_traits"])
            ax.set_xticklabels([str(n) for n in res["n_traits"]])
            ax.set_xlabel("training traits (held-out traits scored)")
            ax.set_ylabel("centered cosine (pairs)" if key_ == "centered" else "trait-vector cosine to native")
            ax.axhline(0, color="black", linewidth=0.5)
            ax.set_title(f"{d['source']} → {d['target']}", fontsize=9)
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle("Few-shot maps (the Preference-Vector idea): quality vs training traits and pairs per trait p "
                 "(mean, 2.5–97.5 % over random trait subsets)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def redraw(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    paths = []
    for p in out.rglob("behaviour_results.json"):
        res = json.loads(p.read_text())
        paths += [behaviour_figure(res, p.parent / "behaviour.png"),
                  behaviour_traits_figure(res, p.parent / "behaviour_traits.png")]
    for p in out.rglob("ood_results.json"):
        paths.append(ood_figure(json.loads(p.read_text()), p.parent / "ood.png"))
    for p in out.rglob("fewshot_results.json"):
        paths.append(fewshot_figure(json.loads(p.read_text()), p.parent / "fewshot.png"))
    return paths
