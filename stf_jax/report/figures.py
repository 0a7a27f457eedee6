"""Report figures. Each function takes parsed results and returns a matplotlib Figure (Agg backend)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# methods and steering conditions share colours across every figure
COLORS = {
    "native": "#111111",
    "procrustes": "#1f77b4",
    "affine": "#ff7f0e",
    "affine_tokens": "#8c564b",
    "linear": "#2ca02c",
    "lowrank": "#9467bd",
    "mlp": "#d62728",
    "identity": "#bcbd22",
    "mean_target": "#17becf",
    "trait_mean": "#7f7f7f",
    "zero_shot": "#7f7f7f",
    "random": "#b0b0b0",
    "shuffled": "#e377c2",
}
METHOD_ORDER = ["procrustes", "affine", "affine_tokens", "linear", "lowrank", "mlp", "identity", "mean_target",
                "trait_mean"]
CONDITION_ORDER = ["native", "procrustes", "affine", "affine_tokens", "linear", "lowrank", "mlp", "zero_shot",
                   "shuffled", "random"]
BASELINES = {"identity", "mean_target", "trait_mean"}
SCRAMBLE_LABELS = {"proper": "proper pairs", "within_trait": "within-trait shuffle", "cross_trait": "cross-trait shuffle"}
_fallback = plt.get_cmap("tab20")


def color(name: str) -> str:
    if name in COLORS:
        return COLORS[name]
    return matplotlib.colors.to_hex(_fallback(sum(map(ord, name)) % 20))


def ordered(names, order: Sequence[str]) -> list[str]:
    names = list(names)
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def num(x: Any) -> float:
    """float, NaN for anything missing or non-numeric."""
    if isinstance(x, dict):
        x = x.get("mean")
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _arr(xs) -> np.ndarray:
    return np.array([num(x) for x in (xs or [])], dtype=float)


def direction_label(d: dict, with_layers: bool = True) -> str:
    lab = f"{d.get('source', '?')} → {d.get('target', '?')}"
    if with_layers and d.get("layer_source") is not None:
        lab += f" ({d.get('layer_source')}→{d.get('layer_target')})"
    return lab


def _empty(fig: Figure, ax, text: str) -> Figure:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555")
    return fig


# ----------------------------------------------------------------------------------------------------------------
# alignment


def trait_transfer_figure(direction: dict, traits: Sequence[str] | None = None,
                          metric: str = "per_trait_test_centered") -> Figure:
    """Horizontal grouped bars: test cosine (centered) per trait for each transfer method; the trait_mean
    baseline is the grey band behind each group. Traits are sorted by the best method's mean."""
    methods_all = direction.get("methods", {})
    methods = [m for m in ordered(methods_all, METHOD_ORDER) if m not in BASELINES and methods_all[m].get(metric)]
    traits = list(traits or sorted({t for m in methods for t in methods_all[m][metric]}))
    fig = Figure(figsize=(10, 1.6 + 0.42 * max(len(traits), 3)), layout="constrained")
    ax = fig.add_subplot()
    if not methods or not traits:
        return _empty(fig, ax, "no per-trait results")
    vals = {m: np.array([num(methods_all[m][metric].get(t)) for t in traits]) for m in methods}
    methods = [m for m in methods if np.isfinite(vals[m]).any()]  # e.g. a method that could not run here
    if not methods:
        return _empty(fig, ax, "no finite per-trait results")
    stds = {m: np.array([num((methods_all[m][metric].get(t) or {}).get("std")) for t in traits]) for m in methods}
    best = max(methods, key=lambda m: np.nan_to_num(num(methods_all[m].get("test_centered")), nan=-9))
    order = np.argsort(np.nan_to_num(vals[best], nan=-9))  # best at the top
    y = np.arange(len(traits))
    group = 0.84
    h = group / len(methods)
    base = methods_all.get("trait_mean", {}).get(metric)
    if base:
        bv = np.array([num(base.get(traits[i])) for i in order])
        ax.barh(y, np.nan_to_num(bv), height=0.96, color="#e6e6e6", edgecolor="#bdbdbd", lw=0.6, zorder=1,
                label="trait_mean baseline")
        ax.scatter(bv, y, marker="|", s=260, color="#555", zorder=4, lw=1.6)
    for i, m in enumerate(methods):
        off = (i - (len(methods) - 1) / 2) * h
        v, s = vals[m][order], stds[m][order]
        ax.barh(y - off, np.nan_to_num(v), height=h * 0.92, color=color(m), label=m, zorder=2,
                xerr=np.where(np.isfinite(s), s, 0), error_kw=dict(lw=0.6, capsize=0, ecolor="#333", alpha=0.7))
    ax.set_yticks(y, [traits[i] for i in order], fontsize=9)
    ax.set_ylim(-0.6, len(traits) - 0.4)
    ax.axvline(0, color="#333", lw=0.8)
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    what = "centered " if metric.endswith("centered") else ""
    ax.set_xlabel(f"{what}test cosine of T(v_source) with v_target (mean over trials; bars: ± std)")
    fig.suptitle(f"Per-trait transfer, {direction_label(direction)}", fontsize=12, x=0.01, ha="left")
    handles, labels = ax.get_legend_handles_labels()
    if base:  # methods first, in bar order (top to bottom), then the baseline
        handles, labels = handles[1:] + handles[:1], labels[1:] + labels[:1]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 7), fontsize=9, frameon=False)
    return fig


def scrambling_figure(directions: Sequence[dict], metric: str = "test_centered") -> Figure:
    """Scrambling hierarchy: per method, proper vs within-trait vs cross-trait shuffled training pairs
    (test cosine, centered), one panel per direction; error bars are the std over trials."""
    dirs = [d for d in directions if d.get("scrambling")]
    n = max(len(dirs), 1)
    fig = Figure(figsize=(min(5.0 * n, 11), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    if not dirs:
        return _empty(fig, axes[0], "no scrambling controls in these results")
    shades = {"proper": 1.0, "within_trait": 0.6, "cross_trait": 0.3}
    for ax, d in zip(axes, dirs):
        methods = ordered(d["scrambling"], METHOD_ORDER)
        x = np.arange(len(methods))
        w = 0.8 / 3
        for j, s in enumerate(("proper", "within_trait", "cross_trait")):
            means = np.array([num((d["scrambling"][m].get(s) or {}).get(metric)) for m in methods])
            errs = np.array([num(((d["scrambling"][m].get(s) or {}).get(metric) or {}).get("std")) for m in methods])
            cols = [matplotlib.colors.to_rgba(color(m), shades[s]) for m in methods]
            bars = ax.bar(x + (j - 1) * w, np.nan_to_num(means), w * 0.95, color=cols, edgecolor=[color(m) for m in methods],
                          yerr=np.where(np.isfinite(errs), errs, 0), capsize=3, error_kw=dict(lw=0.8),
                          hatch=["", "//", "xx"][j])
            for b, v, e in zip(bars, means, errs):
                if math.isfinite(v):
                    top = max(v, 0) + (e if math.isfinite(e) else 0)
                    ax.annotate(f"{v:.2f}".replace("-0.00", "0.00"), (b.get_x() + b.get_width() / 2, top), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, methods)
        ax.axhline(0, color="#333", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(direction_label(d), fontsize=10)
    axes[0].set_ylabel("centered test cosine" if metric.endswith("centered") else "test cosine")
    handles = [Patch(facecolor=matplotlib.colors.to_rgba("#666", shades[s]), edgecolor="#666", hatch=["", "//", "xx"][j],
                     label=SCRAMBLE_LABELS[s]) for j, s in enumerate(shades)]
    fig.legend(handles=handles, loc="outside upper center", ncol=3, fontsize=9, frameon=False)
    return fig


def pair_matrix_figure(columns: Sequence[tuple[str, dict]], metric: str = "test_centered") -> Figure:
    """Heatmap: method (rows) × directed model pair (columns) test cosine, annotated with the mean.
    `columns` is [(column label, direction dict)]."""
    methods = ordered({m for _, d in columns for m in d.get("methods", {})}, METHOD_ORDER)
    if metric.endswith("centered"):
        methods = [m for m in methods if m != "mean_target"]  # 0 by construction
    ncol = max(len(columns), 1)
    fig = Figure(figsize=(max(5.5, 2.2 + 1.6 * ncol), 2.0 + 0.42 * max(len(methods), 2)), layout="constrained")
    ax = fig.add_subplot()
    if not columns or not methods:
        return _empty(fig, ax, "no alignment results")
    mat = np.array([[num((d.get("methods", {}).get(m) or {}).get(metric)) for _, d in columns] for m in methods])
    finite = mat[np.isfinite(mat)]
    vmax = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-6)
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            v = mat[i, j]
            ax.text(j, i, "—" if not math.isfinite(v) else f"{v:.3f}", ha="center", va="center", fontsize=9,
                    color="white" if math.isfinite(v) and abs(v) > 0.6 * vmax else "#111")
    ax.set_xticks(range(len(columns)), [lab for lab, _ in columns], fontsize=8)
    ax.set_yticks(range(len(methods)), methods)
    ax.tick_params(length=0)
    fig.colorbar(im, ax=ax, shrink=0.85, label="centered test cosine" if metric.endswith("centered") else "test cosine")
    ax.set_title("Method × directed model pair", fontsize=12, loc="left")
    return fig


def layer_sweep_figure(sweep: dict, metric: str = "test_centered") -> Figure:
    """Layer × layer heatmap(s) of the Procrustes sweep (one panel per directed pair). ★ marks the chosen
    pair (`best`), ○ the best on test if it differs; hatched cells are ineligible (a layer with zero vectors)."""
    pairs = list((sweep or {}).get("pairs", {}).values())
    n = max(len(pairs), 1)
    fig = Figure(figsize=(min(5.8 * n, 11.5), 5.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    if not pairs:
        return _empty(fig, axes[0], "no layer sweep")
    for ax, s in zip(axes, pairs):
        mat = np.array([[num(v) for v in row] for row in s.get(metric, [])], dtype=float)
        ls, lt = list(s.get("layers_source", range(mat.shape[0]))), list(s.get("layers_target", range(mat.shape[1])))
        elig = np.array(s["eligible"], dtype=bool) if s.get("eligible") is not None else np.ones_like(mat, bool)
        shown = np.ma.masked_invalid(np.where(elig, mat, np.nan))
        fin = mat[np.isfinite(mat) & elig]
        im = ax.imshow(shown, cmap="viridis", origin="lower", aspect="auto",
                       vmin=float(fin.min()) if fin.size else None, vmax=float(fin.max()) if fin.size else None,
                       extent=(-0.5, len(lt) - 0.5, -0.5, len(ls) - 0.5))
        if (~elig).any():
            ax.imshow(np.where(~elig, 1.0, np.nan), cmap="Greys", vmin=0, vmax=3, origin="lower", aspect="auto",
                      extent=(-0.5, len(lt) - 0.5, -0.5, len(ls) - 0.5))
        step_t = max(1, math.ceil(len(lt) / 16))
        step_s = max(1, math.ceil(len(ls) / 16))
        ax.set_xticks(range(0, len(lt), step_t), [str(v) for v in lt[::step_t]], fontsize=8)
        ax.set_yticks(range(0, len(ls), step_s), [str(v) for v in ls[::step_s]], fontsize=8)
        ax.set_xlabel(f"target layer ({s.get('target', '?')})")
        ax.set_ylabel(f"source layer ({s.get('source', '?')})")
        handles = []
        for key, marker, label, col in (("best_on_test", "o", "best on test", "#ff7f0e"),
                                         ("best", "*", "chosen", "#d62728")):
            b = s.get(key)
            if not b or b.get("layer_source") not in ls or b.get("layer_target") not in lt:
                continue
            if key == "best_on_test" and s.get("best") and (b["layer_source"], b["layer_target"]) == (
                    s["best"].get("layer_source"), s["best"].get("layer_target")):
                continue
            i, j = ls.index(b["layer_source"]), lt.index(b["layer_target"])
            ax.scatter([j], [i], marker=marker, s=260 if marker == "*" else 130, facecolor=col if marker == "*" else "none",
                       edgecolor="white" if marker == "*" else col, linewidth=1.2 if marker == "*" else 2.2, zorder=5)
            by = f" (by {b['by']})" if b.get("by") else ""
            handles.append(Line2D([], [], ls="", marker=marker, markersize=12 if marker == "*" else 9,
                                  markerfacecolor=col if marker == "*" else "none", markeredgecolor=col,
                                  label=f"{label}{by}: layers {b['layer_source']}→{b['layer_target']}, "
                                        f"{metric.replace('_', ' ')} {num(b.get(metric)):.3f}"))
        if (~elig).any():
            handles.append(Patch(facecolor="#d9d9d9", label="ineligible (zero vectors)"))
        if handles:
            ax.legend(handles=handles[::-1], loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=9, ncol=1,
                      frameon=False)
        ax.set_title(f"{s.get('source', '?')} → {s.get('target', '?')} (k = {s.get('k', '?')})", fontsize=11)
        fig.colorbar(im, ax=ax, shrink=0.8, label="centered test cosine" if metric.endswith("centered") else metric)
    return fig


def variance_figure(curves: dict[str, dict[str, dict[str, Any]]]) -> Figure:
    """Cumulative explained variance vs number of PCA components, one panel per alignment result and
    one line per model @ layer; dashed lines: the k used and 95 %."""
    n = max(len(curves), 1)
    fig = Figure(figsize=(min(5.0 * n, 11), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False, sharey=True)[0])
    if not curves:
        return _empty(fig, axes[0], "no variance curves")
    for ax, (name, per_model) in zip(axes, curves.items()):
        ks = set()
        for i, (label, c) in enumerate(per_model.items()):
            y = np.array(c["curve"], float)
            x = np.arange(1, len(y) + 1)
            line, = ax.plot(x, y, lw=1.8, label=label + (" (from run files)" if c.get("source") == "run files" else ""),
                            color=plt.get_cmap("tab10")(i % 10))
            k = c.get("k")
            if k:
                ks.add(int(k))
                at = c.get("explained_at_k")
                if at is None and int(k) <= len(y):
                    at = y[int(k) - 1]
                if at is not None and math.isfinite(num(at)):
                    ax.scatter([int(k)], [num(at)], color=line.get_color(), zorder=4, s=22)
        for k in sorted(ks):
            ax.axvline(k, color="#555", ls="--", lw=0.9)
            ax.annotate(f"k = {k}", (k, 0.02), xytext=(3, 0), textcoords="offset points", fontsize=8, color="#333",
                        xycoords=("data", "axes fraction"))
        ax.axhline(0.95, color="#999", ls=":", lw=0.9)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("PCA components")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("cumulative explained variance")
    return fig


# ----------------------------------------------------------------------------------------------------------------
# steering


def _grid(n: int, ncols: int = 6) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def alpha_curves_figure(direction: dict, alphas: Sequence[float], conditions: Sequence[str] | None = None,
                        ncols: int = 5) -> Figure:
    """Small multiples, one panel per trait: steering effect vs α for the target's own vector (native, black)
    and each transferred / control vector, with 95 % bootstrap CI bands."""
    conds_all = direction.get("conditions", {})
    conds = [c for c in ordered(conds_all, CONDITION_ORDER) if conditions is None or c in conditions]
    traits = sorted({t for c in conds for t in (conds_all[c].get("traits") or {})})
    rows, cols = _grid(max(len(traits), 1), ncols)
    fig = Figure(figsize=(2.05 * cols + 0.5, 1.8 * rows + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True)).ravel()
    if not traits:
        return _empty(fig, axes[0], "no steering curves")
    x = np.array([num(a) for a in alphas], float)
    for ax, t in zip(axes, traits):
        for c in conds:
            tr = (conds_all[c].get("traits") or {}).get(t)
            if not tr or not tr.get("curve"):
                continue
            cur = tr["curve"]
            m, lo, hi = _arr(cur.get("mean")), _arr(cur.get("lo")), _arr(cur.get("hi"))
            if len(m) != len(x):
                continue
            kind = conds_all[c].get("kind")
            style = dict(color=color(c), lw=2.0 if c == "native" else 1.3,
                         ls="--" if kind == "control" else "-", zorder=3 if c == "native" else 2)
            ax.plot(x, m, marker="o" if c == "native" else None, ms=3, **style)
            if len(lo) == len(x) and len(hi) == len(x) and kind != "control":
                ax.fill_between(x, lo, hi, color=color(c), alpha=0.18 if c == "native" else 0.1, lw=0, zorder=1)
        ax.axhline(0, color="#999", lw=0.6)
        ax.axvline(0, color="#999", lw=0.6)
        ax.set_title(t, fontsize=9, pad=3)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for ax in axes[len(traits):]:
        ax.axis("off")
    for col in range(min(cols, len(traits))):  # the lowest panel of each column gets the α tick labels
        ax = axes[max(i for i in range(col, len(traits), cols))]
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("α", fontsize=8)
    for r in range(rows):
        axes[r * cols].set_ylabel("effect", fontsize=8)
    handles = [Line2D([], [], color=color(c), lw=2.0 if c == "native" else 1.4,
                      ls="--" if conds_all[c].get("kind") == "control" else "-",
                      marker="o" if c == "native" else None, ms=3, label=c) for c in conds]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize=10, frameon=False)
    fig.suptitle(f"α sweep, {direction_label(direction)} (bands: 95 % bootstrap CI)", fontsize=12, x=0.01,
                 ha="left")
    return fig


def slope_ratio_figure(direction: dict) -> Figure:
    """Bars per condition: slope ratio (transferred / native steering slope, mean over traits) and Pearson r
    of the α curves, with 95 % bootstrap CIs."""
    conds_all = direction.get("conditions", {})
    conds = [c for c in ordered(conds_all, CONDITION_ORDER)
             if c != "native" and (conds_all[c].get("summary") or {}).get("slope_ratio")]
    fig = Figure(figsize=(min(max(7.0, 1.6 + 1.1 * len(conds)), 10.5), 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    if not conds:
        _empty(fig, axes[1], "")
        return _empty(fig, axes[0], "no slope ratios")
    for ax, metric, ref, label in ((axes[0], "slope_ratio", 1.0, "slope ratio (transferred / native)"),
                                   (axes[1], "pearson_r", 1.0, "Pearson r with native curve")):
        x = np.arange(len(conds))
        stats = [(conds_all[c].get("summary") or {}).get(metric) or {} for c in conds]
        m = np.array([num(s.get("mean")) for s in stats])
        lo = np.array([num(s.get("lo")) for s in stats])
        hi = np.array([num(s.get("hi")) for s in stats])
        err = np.vstack([np.where(np.isfinite(lo), m - lo, 0), np.where(np.isfinite(hi), hi - m, 0)])
        err = np.where(np.isfinite(err) & (err >= 0), err, 0)
        hatches = ["//" if conds_all[c].get("kind") == "control" else "" for c in conds]
        bars = ax.bar(x, np.nan_to_num(m), 0.7, color=[color(c) for c in conds], yerr=err, capsize=4,
                      edgecolor="#333", lw=0.5, hatch=hatches)
        for b, v, e_lo, e_hi in zip(bars, m, err[0], err[1]):
            up = not math.isfinite(v) or v >= 0
            y = 0 if not math.isfinite(v) else (v + e_hi if up else v - e_lo)
            ax.annotate("n/a" if not math.isfinite(v) else f"{v:.2f}", (b.get_x() + b.get_width() / 2, y),
                        xytext=(0, 3 if up else -10), textcoords="offset points", ha="center", fontsize=8,
                        color="#333")
        ax.margins(y=0.12)
        ax.axhline(ref, color="#111", ls="--", lw=0.9)
        ax.axhline(0, color="#333", lw=0.8)
        ax.set_xticks(x, conds, rotation=25, ha="right", fontsize=9)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(f"Steering transfer, {direction_label(direction)} (mean over traits, 95 % CI; hatched: controls)",
                 fontsize=11, x=0.01, ha="left")
    return fig


def in_model_slopes_figure(models: dict[str, dict]) -> Figure:
    """Per trait and model: slope of the in-model α curve (own vector), 95 % CI; hollow = not monotonic."""
    names = list(models)
    traits = sorted({t for m in names for t in ((models[m].get("in_model") or {}).get("traits") or {})})
    fig = Figure(figsize=(9, 1.4 + 0.3 * max(len(traits), 3)), layout="constrained")
    ax = fig.add_subplot()
    if not traits:
        return _empty(fig, ax, "no in-model steering results")
    y = np.arange(len(traits))
    off = 0.32 / max(len(names) - 1, 1) if len(names) > 1 else 0
    for i, m in enumerate(names):
        tr = (models[m].get("in_model") or {}).get("traits") or {}
        col = plt.get_cmap("tab10")(i % 10)
        for j, t in enumerate(traits):
            s = (tr.get(t) or {}).get("slope") or {}
            v, lo, hi = num(s.get("mean")), num(s.get("lo")), num(s.get("hi"))
            yy = j + (i - (len(names) - 1) / 2) * off
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [yy, yy], color=col, lw=1.2)
            if math.isfinite(v):
                mono = (tr.get(t) or {}).get("monotonic")
                ax.scatter([v], [yy], color=col if mono else "white", edgecolor=col, s=24, zorder=3, lw=1.2)
        ax.scatter([], [], color=col, label=f"{m} (layer {models[m].get('layer', '?')})")
    ax.scatter([], [], color="white", edgecolor="#333", label="not monotonic")
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_yticks(y, traits, fontsize=8)
    ax.set_ylim(-0.7, len(traits) - 0.3)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("steering slope d(effect)/dα, own vector (95 % CI)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("In-model steering", fontsize=12, loc="left")
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()
