"""Evaluation by vector kind: does a map carry vectors of traits, and kinds, it never saw?

For each *recipe* (which kinds of data the map is fitted on: styles only, the mixture, corpora only) and
each trait of each kind, the map is refitted without that trait (leave-one-trait-out) and without its
whole kind (leave-one-kind-out); the trait's vector (mean unit pair vector over all its pairs) is carried
and compared with the target model's own vector for the trait (cosine). Refits are moment subtractions
(`mixture.Moments`), one linear solve each. Evaluation-only kinds (the OOD pairs) are carried by the full
recipe. Each row also records the carried vector's coverage under the map that carried it, and the
target vector's split-half cosine (how stable the native vector itself is: the ceiling of the cosine).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from .mixture import LayerData, Moments, SourceRun, unit

CORPUS_KIND = "corpus"


@dataclasses.dataclass(frozen=True)
class Fit:
    """A solved ridge system: the affine map's parts, and the factor that gives coverage."""

    a: np.ndarray
    b: np.ndarray
    gram: np.ndarray
    lam: float

    @classmethod
    def solve(cls, m: Moments, ridge: float) -> "Fit":
        mu_s, mu_t = m.sx / m.w, m.sy / m.w
        gram = m.sxx / m.w - np.outer(mu_s, mu_s)
        cross = m.sxy / m.w - np.outer(mu_s, mu_t)
        lam = ridge * np.trace(gram) / gram.shape[0]
        a = np.linalg.solve(gram + lam * np.eye(len(gram)), cross)
        return cls(a, mu_t - mu_s @ a, gram, float(lam))

    def carry(self, u: np.ndarray) -> np.ndarray:
        return unit(u @ self.a + self.b)

    def coverage(self, u: np.ndarray) -> np.ndarray:
        """uᵀ G (G + λI)⁻¹ u for unit rows u (= `coverage.coverage` with every axis kept)."""
        u = unit(u)
        z = np.linalg.solve(self.gram + self.lam * np.eye(len(self.gram)), u.T)  # [d_s, m]
        return np.sum(u.T * (self.gram @ z), axis=0)


def _trait_vectors(data: LayerData, i: int, trait: str, rng: np.random.Generator):
    """(source vector, target vector, target split-half cosine) of one trait: all its usable pairs."""
    r = data.runs[i]
    sel = np.flatnonzero(data.usable[i] & (r.traits == trait))
    perm = rng.permutation(sel)
    h1, h2 = perm[: len(perm) // 2], perm[len(perm) // 2:]
    half = float(np.sum(unit(data.x_t[i][h1].mean(0)) * unit(data.x_t[i][h2].mean(0)))) if len(h1) else float("nan")
    return unit(data.x_s[i][sel].mean(0)), unit(data.x_t[i][sel].mean(0)), half, len(sel)


def evaluate_layer(data: LayerData, kinds: Sequence[str], recipes: dict[str, Sequence[str]], ridge: float,
                   eval_only: Sequence[str] = (), seed: int = 0) -> list[dict[str, Any]]:
    """Rows {recipe, kind, trait, protocol, cosine, coverage, split_half, n} at one layer pair.

    kinds[i] names data.runs[i]; recipes: {name: kinds fitted on}; eval_only: kinds never fitted on."""
    rng = np.random.default_rng(seed)
    index = {k: i for i, k in enumerate(kinds)}
    per_kind = {k: data.moments(i) for k, i in index.items() if k not in eval_only}
    rows = []
    for rname, fitted in recipes.items():
        total = _sum([per_kind[k] for k in fitted])
        full = Fit.solve(total, ridge)
        for kind, i in index.items():
            if kind == CORPUS_KIND:
                continue
            r = data.runs[i]
            for trait in r.trait_names:
                u_s, u_t, half, n = _trait_vectors(data, i, trait, rng)
                if n < 2:
                    continue
                fits = {"full": full}
                if kind in fitted:
                    fits["trait_out"] = Fit.solve(total - data.moments(i, r.traits == trait), ridge)
                    fits["kind_out"] = Fit.solve(total - per_kind[kind], ridge) if len(fitted) > 1 else None
                for protocol, fit in fits.items():
                    if fit is None:
                        continue
                    rows.append({"recipe": rname, "kind": kind, "trait": trait, "protocol": protocol,
                                 "seen_kind": kind in fitted and protocol != "kind_out",
                                 "cosine": float(np.sum(fit.carry(u_s) * u_t)),
                                 "coverage": float(fit.coverage(u_s[None])[0]), "split_half": half, "n": n})
    return rows


def _sum(ms: list[Moments]) -> Moments:
    out = ms[0]
    for m in ms[1:]:
        out = out + m
    return out


def unseen_rows(rows: list[dict]) -> list[dict]:
    """Per (recipe, kind, trait): the figure for a trait the map never saw — trait_out if its kind is in
    the recipe (the map saw other traits of the kind, never this one), else full (the whole kind is
    unseen). The kind_out table (`summary_table(rows, "kind_out")`) is the stricter one."""
    best: dict[tuple, dict] = {}
    rank = {"full": 0, "kind_out": 1, "trait_out": 2}
    for r in rows:
        key = (r["layer_source"], r["layer_target"], r["recipe"], r["kind"], r["trait"]) if "layer_source" in r else \
            (r["recipe"], r["kind"], r["trait"])
        if r["protocol"] == "full" and r["seen_kind"]:
            continue  # a trait the map was fitted on
        if key not in best or rank[r["protocol"]] > rank[best[key]["protocol"]]:
            best[key] = r
    return list(best.values())


def summary_table(rows: list[dict], protocol: str) -> dict[str, dict[str, float]]:
    """{recipe: {kind: mean cosine}} over rows of one protocol ('trait_out', 'kind_out', or 'unseen')."""
    sel = unseen_rows(rows) if protocol == "unseen" else [r for r in rows if r["protocol"] == protocol or
                                                          (r["protocol"] == "full" and not r["seen_kind"])]
    out: dict[str, dict[str, list]] = {}
    for r in sel:
        out.setdefault(r["recipe"], {}).setdefault(r["kind"], []).append(r["cosine"])
    return {rec: {k: float(np.mean(v)) for k, v in kinds.items()} for rec, kinds in out.items()}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (average ranks for ties), numpy only."""
    def ranks(x):
        x = np.asarray(x, np.float64)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluate_kinds(runs: Sequence[SourceRun], kinds: Sequence[str], layer_pairs: Sequence[tuple[int, int]],
                   recipes: dict[str, Sequence[str]], ridge: float = 0.1, eval_only: Sequence[str] = (),
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """`evaluate_layer` at every layer pair; rows carry their layer pair."""
    out = []
    for ls, lt in layer_pairs:
        data = LayerData.load(list(runs), ls, lt)
        rows = evaluate_layer(data, kinds, recipes, ridge, eval_only)
        for r in rows:
            r.update(layer_source=ls, layer_target=lt)
        out.extend(rows)
        table = summary_table(rows, "unseen")
        log(f"L{ls}->L{lt} unseen-trait cosine: " + "; ".join(
            f"{rec}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.items())) for rec, t in table.items()))
    return out


DEFAULT_RECIPES = {"styles": ("styles",), "mixture": ("styles", "ab", "dialogue", "corpus"), "corpus": ("corpus",)}


def kinds_report(kind_runs: dict[str, str], models: Sequence[str], out_dir, *, eval_only: Sequence[str] = ("ood",),
                 weights: dict[str, float] | None = None, recipes: dict[str, Sequence[str]] | None = None,
                 layers: str | int = "depth", every: int = 1, ridge: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Both directions between `models`: rows, summary tables, coverage-quality rank correlation; writes
    kinds.json, kinds.md and kinds.png under out_dir."""
    from pathlib import Path

    from .fit import layer_pairs
    from .mixture import Source, open_sources

    recipes = {k: tuple(v) for k, v in (recipes or DEFAULT_RECIPES).items()}
    recipes = {k: tuple(x for x in v if x in kind_runs) for k, v in recipes.items()}
    recipes = {k: v for k, v in recipes.items() if v}
    names = list(kind_runs)
    result: dict[str, Any] = {"kinds": kind_runs, "eval_only": list(eval_only), "weights": weights or {},
                              "recipes": recipes, "ridge": ridge, "directions": {}}
    for src, tgt in (tuple(models), tuple(models)[::-1]):
        sources = [Source(Path(kind_runs[k]), float((weights or {}).get(k, 1.0))) for k in names]
        runs = open_sources(sources, src, tgt, test_fraction, seed)
        pairs = layer_pairs(layers, runs[0].ref_s, runs[0].ref_t)[::max(1, every)]
        rows = evaluate_kinds(runs, names, pairs, recipes, ridge, eval_only, log)
        unseen = unseen_rows(rows)
        result["directions"][f"{src}->{tgt}"] = {
            "layer_pairs": pairs, "rows": rows,
            "unseen": summary_table(rows, "unseen"), "trait_out": summary_table(rows, "trait_out"),
            "kind_out": summary_table(rows, "kind_out"),
            "coverage_spearman": {rec: spearman([r["coverage"] for r in unseen if r["recipe"] == rec],
                                                [r["cosine"] for r in unseen if r["recipe"] == rec])
                                  for rec in recipes},
            "coverage_spearman_all": spearman([r["coverage"] for r in unseen], [r["cosine"] for r in unseen]),
            "n_unseen": len(unseen)}
    _write_kinds(Path(out_dir), result)
    return result


def kinds_markdown(result: dict[str, Any]) -> str:
    lines = []
    for direction, d in result["directions"].items():
        kinds = sorted({k for t in d["unseen"].values() for k in t})
        lines += [f"### {direction} ({len(d['layer_pairs'])} layer pairs; mean carried-vs-native cosine of traits the "
                  "map never saw)", "", "| fitted on | " + " | ".join(kinds) + " |",
                  "| --- | " + " | ".join("---" for _ in kinds) + " |"]
        for rec, t in d["unseen"].items():
            lines.append(f"| {rec} | " + " | ".join(f"{t[k]:.2f}" if k in t else "" for k in kinds) + " |")
        lines += ["", "coverage vs cosine, Spearman over unseen (trait, layer) rows: " + ", ".join(
            f"{rec} {v:.2f}" for rec, v in d["coverage_spearman"].items()) + f"; all {d['coverage_spearman_all']:.2f} "
            f"(n = {d['n_unseen']})", ""]
    return "\n".join(lines)


def _write_kinds(out: "Path", result: dict[str, Any]) -> None:
    import json

    from ..extract.store import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "kinds.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_text(out / "kinds.md", kinds_markdown(result) + "\n")
    kinds_figure(result, out / "kinds.png")


def kinds_figure(result: dict[str, Any], path) -> None:
    """One figure: per direction, mean unseen-trait cosine by kind, one bar per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = list(result["directions"].items())
    fig, axes = plt.subplots(1, len(dirs), figsize=(5.5 * len(dirs), 3.6), squeeze=False)
    for ax, (direction, d) in zip(axes[0], dirs):
        kinds = sorted({k for t in d["unseen"].values() for k in t})
        recs = list(d["unseen"])
        width = 0.8 / max(1, len(recs))
        for j, rec in enumerate(recs):
            vals = [d["unseen"][rec].get(k, np.nan) for k in kinds]
            ax.bar(np.arange(len(kinds)) + j * width, vals, width, label=f"fitted on {rec}")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(kinds)) + width * (len(recs) - 1) / 2, kinds)
        ax.set_ylim(-0.2, 1.0)
        ax.set_title(direction, fontsize=9)
        ax.set_ylabel("carried vs native cosine (unseen traits)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = str(path) + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    import os

    os.replace(tmp, path)
