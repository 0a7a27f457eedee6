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
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..align.affine import AffineMap
from .coverage import coverage_exact
from .mixture import CorpusSourceRun, LayerData, Moments, SourceRun, carry_rows, solve_moments, unit

CORPUS_KIND = "corpus"


@dataclasses.dataclass(frozen=True)
class Fit:
    """A solved ridge system (float64): the affine map's parts, and the scatter that gives coverage."""

    a: np.ndarray
    b: np.ndarray
    gram: np.ndarray

    @classmethod
    def solve(cls, m: Moments, ridge: float) -> "Fit":
        return cls.scored(m, ridge, np.zeros((0, len(m.sx))))[0]

    @classmethod
    def scored(cls, m: Moments, ridge: float, u: np.ndarray) -> tuple["Fit", np.ndarray, np.ndarray]:
        """The fit, and for unit rows u [k, d_s] their carried directions [k, d_t] and coverages [k]."""
        fit = cls(*solve_moments(m, ridge))
        u = unit(np.asarray(u, np.float64))
        return fit, fit.carry(u), fit.coverage(u)

    def carry(self, u: np.ndarray) -> np.ndarray:
        return carry_rows(AffineMap(self.a, self.b), u)

    def coverage(self, u: np.ndarray) -> np.ndarray:
        return coverage_exact(self.gram, u)


def _trait_vectors(data: LayerData, i: int, trait: str, rng: np.random.Generator):
    """(source vector, target vector, target split-half cosine) of one trait: all its usable pairs.

    The halves are stratified by the pairs' text endings: a last-token vector carries the identity of
    the final token, and in A/B items that is the answer letter, balanced over the whole trait but not
    over a random half (whose mean then points along "A minus B", not along the behaviour)."""
    r = data.runs[i]
    sel = np.flatnonzero(data.usable[i] & (r.traits == trait))
    h1, h2 = [], []
    for ending in np.unique(r.endings[sel]):
        rows = rng.permutation(sel[r.endings[sel] == ending])
        first = len(h1) <= len(h2)
        (h1 if first else h2).extend(rows[0::2])
        (h2 if first else h1).extend(rows[1::2])
    half = float(np.sum(unit(data.x_t[i][h1].mean(0)) * unit(data.x_t[i][h2].mean(0)))) if h1 and h2 else float("nan")
    return unit(data.x_s[i][sel].mean(0)), unit(data.x_t[i][sel].mean(0)), half, len(sel)


def evaluate_layer(data: LayerData, kinds: Sequence[str], recipes: dict[str, Sequence[str]], ridge: float,
                   eval_only: Sequence[str] = (), seed: int = 0) -> list[dict[str, Any]]:
    """Rows {recipe, kind, trait, protocol, cosine, coverage, split_half, n} at one layer pair.

    kinds[i] names data.runs[i]; recipes: {name: kinds fitted on}; eval_only: kinds never fitted on."""
    rng = np.random.default_rng(seed)
    index = {k: i for i, k in enumerate(kinds)}
    per_kind = {k: data.moments(i) for k, i in index.items() if k not in eval_only}
    traits = [(kind, i, t, *_trait_vectors(data, i, t, rng)) for kind, i in index.items()
              if kind != CORPUS_KIND and not isinstance(data.runs[i], CorpusSourceRun) for t in data.runs[i].trait_names]
    traits = [t for t in traits if t[-1] >= 2]
    rows = []

    def row(rname, kind, trait, protocol, seen, carried, u_t, cov, half, n):
        rows.append({"recipe": rname, "kind": kind, "trait": trait, "protocol": protocol, "seen_kind": seen,
                     "cosine": float(np.sum(carried * u_t)), "coverage": float(cov), "split_half": half, "n": n})

    for rname, fitted in recipes.items():
        total = Moments.sum([per_kind[k] for k in fitted])
        _, carried, cov = Fit.scored(total, ridge, np.stack([t[3] for t in traits]))
        with_traits = {t[0] for t in traits}
        kind_out = {k: Fit.scored(total - per_kind[k], ridge, np.stack([t[3] for t in traits if t[0] == k]))
                    for k in fitted if len(fitted) > 1 and k in with_traits}
        seen_k = {k: 0 for k in kind_out}
        for j, (kind, i, trait, u_s, u_t, half, n) in enumerate(traits):
            row(rname, kind, trait, "full", kind in fitted, carried[j], u_t, cov[j], half, n)
            if kind not in fitted:
                continue
            _, c1, v1 = Fit.scored(total - data.moments(i, data.runs[i].traits == trait), ridge, u_s[None])
            row(rname, kind, trait, "trait_out", True, c1[0], u_t, v1[0], half, n)
            if kind in kind_out:
                _, c2, v2 = kind_out[kind]
                row(rname, kind, trait, "kind_out", False, c2[seen_k[kind]], u_t, v2[seen_k[kind]], half, n)
                seen_k[kind] += 1
    return rows


def unseen_rows(rows: list[dict]) -> list[dict]:
    """Per (recipe, kind, trait): the figure for a trait the map never saw — trait_out if its kind is in
    the recipe (the map saw other traits of the kind, never this one), else full (the whole kind is
    unseen). The kind_out table (`summary_table(rows, "kind_out")`) is the stricter one."""
    best: dict[tuple, dict] = {}
    rank = {"full": 0, "kind_out": 1, "trait_out": 2}
    for r in rows:
        key = (r.get("layer_source"), r.get("layer_target"), r["recipe"], r["kind"], r["trait"])
        if r["protocol"] == "full" and r["seen_kind"]:
            continue  # a trait the map was fitted on
        if key not in best or rank[r["protocol"]] > rank[best[key]["protocol"]]:
            best[key] = r
    return list(best.values())


STABLE = 0.5  # split-half cosine of the target's own vector at or above which it is a direction, not noise


def summary_table(rows: list[dict], protocol: str, stable: float | None = None) -> dict[str, dict[str, float]]:
    """{recipe: {kind: mean cosine}} over rows of one protocol ('trait_out', 'kind_out', or 'unseen'),
    optionally only where the target's own vector is stable (split-half cosine >= `stable`)."""
    sel = unseen_rows(rows) if protocol == "unseen" else [r for r in rows if r["protocol"] == protocol or
                                                          (r["protocol"] == "full" and not r["seen_kind"])]
    if stable is not None:
        sel = [r for r in sel if r["split_half"] >= stable]
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
            "layer_pairs": pairs, "rows": rows, "stable": STABLE,
            "unseen": summary_table(rows, "unseen"), "unseen_stable": summary_table(rows, "unseen", STABLE),
            "kind_out_stable": summary_table(rows, "kind_out", STABLE),
            "n_stable": {k: len([r for r in unseen if r["kind"] == k and r["split_half"] >= STABLE
                                 and r["recipe"] == next(iter(recipes))]) for k in names},
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
        lines += [f"### {direction} ({len(d['layer_pairs'])} layer pairs)", "",
                  "Mean carried-vs-native cosine of traits the map never saw (leave-one-trait-out; a kind outside "
                  "the recipe is unseen as a whole). Each cell: (trait, layer) rows where the target's own vector "
                  f"is stable (split-half ≥ {d['stable']}), then [all rows]; n = stable rows.", "",
                  "| fitted on | " + " | ".join(kinds) + " |", "| --- | " + " | ".join("---" for _ in kinds) + " |"]
        for rec, t in d["unseen"].items():
            st = d["unseen_stable"].get(rec, {})
            lines.append(f"| {rec} | " + " | ".join(
                (f"{st[k]:.2f}" if k in st else "–") + (f" [{t[k]:.2f}]" if k in t else "") for k in kinds) + " |")
        lines.append("| n | " + " | ".join(str(d["n_stable"].get(k, "")) for k in kinds) + " |")
        ko = d.get("kind_out_stable", {})
        if ko:
            lines += ["", "Leave-one-kind-out (the recipe without the trait's whole kind), stable rows: " + "; ".join(
                f"{rec}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.items())) for rec, t in ko.items())]
        lines += ["", "coverage vs cosine, Spearman over unseen (trait, layer) rows: " + ", ".join(
            f"{rec} {v:.2f}" for rec, v in d["coverage_spearman"].items()) + f"; all {d['coverage_spearman_all']:.2f} "
            f"(n = {d['n_unseen']})", ""]
    return "\n".join(lines)


def _write_kinds(out: Path, result: dict[str, Any]) -> None:
    import json

    from ..core.atomic import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "kinds.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_text(out / "kinds.md", kinds_markdown(result) + "\n")
    kinds_figure(result, out / "kinds.png")


def kinds_plot(result: dict[str, Any]):
    """One matplotlib figure: per direction, mean unseen-trait cosine (stable rows) by kind, a bar per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = list(result["directions"].items())
    fig, axes = plt.subplots(1, len(dirs), figsize=(5.5 * len(dirs), 3.6), squeeze=False)
    for ax, (direction, d) in zip(axes[0], dirs):
        kinds = sorted({k for t in d["unseen_stable"].values() for k in t})
        recs = list(d["unseen_stable"])
        width = 0.8 / max(1, len(recs))
        for j, rec in enumerate(recs):
            vals = [d["unseen_stable"][rec].get(k, np.nan) for k in kinds]
            ax.bar(np.arange(len(kinds)) + j * width, vals, width, label=f"fitted on {rec}")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(kinds)) + width * (len(recs) - 1) / 2, kinds)
        ax.set_ylim(-0.2, 1.0)
        ax.set_title(direction, fontsize=9)
        ax.set_ylabel("carried vs native cosine\n(unseen traits, stable layers)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def kinds_figure(result: dict[str, Any], path) -> None:
    import matplotlib.pyplot as plt

    from ..core.atomic import atomic_path

    fig = kinds_plot(result)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def score_map_set(map_set, kind_runs: dict[str, str], traits: dict[str, Sequence[str] | None],
                  seed: int = 0) -> list[dict[str, Any]]:
    """Carry each listed trait's vector (all its pairs; None: every trait of the kind) through a saved map
    set, layer by layer, and compare with the target's own: rows {kind, trait, layer_source, layer_target,
    cosine, coverage, split_half}. What `fit_shipped_maps.py` reports for the shipped sets."""
    from .apply import carry_many
    from .mapfile import MapSet
    from .mixture import Source, open_sources

    src, tgt = map_set.source["name"], map_set.target["name"]
    names = list(kind_runs)
    runs = open_sources([Source(Path(kind_runs[k])) for k in names], src, tgt)
    rng = np.random.default_rng(seed)
    rows = []
    for ls, lt in map_set.layer_pairs():
        data = LayerData.load(runs, ls, lt)
        for i, kind in enumerate(names):
            chosen = traits.get(kind) or data.runs[i].trait_names
            vecs = [(t, *_trait_vectors(data, i, t, rng)) for t in chosen if t in data.runs[i].trait_names]
            if not vecs:
                continue
            # through this layer pair's map only (several target layers may share the source layer)
            carried = carry_many(MapSet({lt: map_set.maps[lt]}), [{ls: v[1]} for v in vecs], strength="unit")
            for (trait, u_s, u_t, half, n), c in zip(vecs, carried):
                rows.append({"kind": kind, "trait": trait, "layer_source": ls, "layer_target": lt, "n": n,
                             "cosine": float(np.sum(unit(c.directions[lt]) * u_t)), "split_half": half,
                             "coverage": c.coverage.get(lt, float("nan"))})
    return rows


def score_table(rows: list[dict], stable: float = STABLE) -> dict[str, dict[str, float]]:
    """{kind: {"stable": mean cosine over stable rows, "all": mean over all, "n_stable", "n"}}."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        sel = [r for r in rows if r["kind"] == kind]
        st = [r["cosine"] for r in sel if r["split_half"] >= stable]
        out[kind] = {"stable": float(np.mean(st)) if st else float("nan"), "all": float(np.mean([r["cosine"] for r in sel])),
                     "n_stable": len(st), "n": len(sel)}
    return out
