"""Assemble the report: one list of blocks (markdown text or figures) rendered twice, as report.md (figures
as PNG files next to it) and as one self-contained report.html (figures as base64 PNG data URIs, inline CSS,
no scripts, no external resources)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..core.stats import format_ci
from ..markdown import table as md_table
from . import answer
from . import figures as F
from .load import ExperimentResults, load_run, variance_curves


# ----------------------------------------------------------------------------------------------------------------
# formatting


def fmt(x: Any, digits: int = 3) -> str:
    v = F.num(x)
    return "—" if not math.isfinite(v) else f"{v:.{digits}f}"


fmt_ci = format_ci  # 'mean [lo, hi]'; '—' for missing / NaN means


def fmt_pm(stat: Any, digits: int = 3) -> str:
    """'mean ± std' from a {mean, std} dict."""
    if not isinstance(stat, dict):
        return fmt(stat, digits)
    m, s = F.num(stat.get("mean")), F.num(stat.get("std"))
    if not math.isfinite(m):
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if math.isfinite(s) and s else f"{m:.{digits}f}"


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower().replace("→", " to ")).strip("-")
    return s or "x"


# ----------------------------------------------------------------------------------------------------------------
# blocks


@dataclass
class FigureBlock:
    id: str
    title: str
    caption: str
    make: Callable[[], Any]  # -> matplotlib Figure
    number: int = 0
    png: bytes = b""
    error: str | None = None

    def render(self, dpi: int = 110) -> None:
        try:
            self.png = F.png_bytes(self.make(), dpi=dpi)
        except Exception as e:  # noqa: BLE001 - one bad figure must not sink the report
            self.error = f"{type(e).__name__}: {e}"

    @property
    def alt(self) -> str:
        return f"{self.title}. {self.caption}"

    @property
    def size(self) -> tuple[int, int]:
        if len(self.png) >= 24 and self.png[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", self.png[16:24])
        return (0, 0)


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (markdown) | FigureBlock

    def md(self, text: str) -> None:
        self.blocks.append(text.strip("\n") + "\n")

    def figure(self, id: str, title: str, caption: str, make: Callable[[], Any]) -> None:
        used = {b.id for b in self.figures}
        fid, i = "fig-" + slug(id), 2
        while fid in used:
            fid, i = f"fig-{slug(id)}-{i}", i + 1
        self.blocks.append(FigureBlock(fid, title, caption, make, number=len(used) + 1))

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for b in self.blocks if isinstance(b, FigureBlock)]


# ----------------------------------------------------------------------------------------------------------------
# content


def _align_markdown(results: dict) -> str:
    """stf_jax.align.report.markdown, headings demoted under the report's sections; tolerant of results written
    by an older version (falls back to rendering without the sweep section)."""
    from ..align.report import markdown

    note = ""
    try:
        text = markdown(results)
    except Exception as e:  # noqa: BLE001
        try:
            text = markdown({**results, "sweep": None})
            note = "\n" + _sweep_fallback(results, e)
        except Exception as e2:  # noqa: BLE001
            return f"*(alignment tables unavailable: {type(e2).__name__}: {e2})*\n"
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = [("#" + ln) if ln.startswith("#") else ln for ln in lines]
    return "\n".join(out).strip("\n") + "\n" + note


def _sweep_fallback(results: dict, error: Exception) -> str:
    """The layer-sweep tables for results the current align markdown cannot read (an older layout)."""
    pairs = ((results.get("sweep") or {}).get("pairs") or {}).values()
    if not pairs:
        return f"*(alignment tables incomplete: {type(error).__name__}: {error})*\n"
    out = ["### Layer sweep (Procrustes; matrix: centered test cosine, mean over trials)", ""]
    for s in pairs:
        b = s.get("best") or {}
        out += [f"**{s.get('source')} → {s.get('target')}** (k = {s.get('k')}): best layers {b.get('layer_source')} → "
                f"{b.get('layer_target')}" + (f" by {b['by']}" if b.get("by") else "")
                + f", centered test {fmt(b.get('test_centered'))} (raw {fmt(b.get('test'))}).", ""]
        header = ["src \\ tgt"] + [str(v) for v in s.get("layers_target", [])]
        rows = [[str(ls)] + [fmt(v, 2) for v in row] for ls, row in zip(s.get("layers_source", []),
                                                                         s.get("test_centered", []))]
        out += [md_table(header, rows), ""]
    return "\n".join(out)


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v and len(prefix.split(".")) < 2:
                out += _flatten(v, key)
            else:
                out.append((key, v))
    return [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in out]


def _short(s: str, n: int = 140) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _experiment_section(doc: Document, run: ExperimentResults) -> None:
    exp = run.experiment
    lines = [f"Run directory: `{run.root}`.", ""]
    for name, p in run.align_paths.items():
        res = run.align[name]
        lines.append(f"- alignment `{name}`: `{p.relative_to(run.root) if p.is_relative_to(run.root) else p}` "
                     f"({len(res.get('directions', []))} directions, {res.get('n_pairs', '?')} pairs, "
                     f"{len(res.get('traits', []))} traits, created {res.get('created', '?')})")
    if run.steer is not None:
        st = run.steer
        lines.append(f"- steering: `{run.steer_path.relative_to(run.root)}` ({len(st.get('models', {}))} models, "
                     f"{len(st.get('directions', []))} directions, α ∈ {st.get('alphas')}, created "
                     f"{st.get('created', '?')})")
    doc.md("## Experiment\n\n" + "\n".join(lines))
    if not exp:
        return
    stages = exp.get("stages") or {}
    if isinstance(stages, list):
        stages = {str(v.get("name", i)) if isinstance(v, dict) else str(i): v for i, v in enumerate(stages)}
    secs = exp.get("seconds") if isinstance(exp.get("seconds"), dict) else {}
    hashes = exp.get("stage_hashes") if isinstance(exp.get("stage_hashes"), dict) else {}
    skipped = set(exp.get("skipped") or [])
    names = list(dict.fromkeys([*stages, *hashes, *(k for k in secs if k != "total"), *skipped]))
    if names:
        rows = []
        for k in names:
            v = stages.get(k)
            if isinstance(v, dict):
                status = str(v.get("status", ""))
                rest = ", ".join(f"{a}={b}" for a, b in v.items() if a != "status")
            elif v is not None:
                status, rest = str(v), ""
            else:
                status = "skipped (up to date)" if k in skipped else ("ran" if k in secs else "—")
                rest = ""
            if hashes.get(k):
                rest = (rest + ", " if rest else "") + f"hash {hashes[k]}"
            rows.append([f"`{k}`", status, _short(rest, 100), fmt(secs.get(k), 1)])
        extra = []
        if secs.get("total") is not None:
            extra.append(f"total {fmt(secs['total'], 1)} s")
        if exp.get("finished"):
            extra.append(f"finished {exp['finished']}")
        if exp.get("config_file"):
            extra.append(f"config `{exp['config_file']}`")
        doc.md("### Stages\n\n" + md_table(["stage", "status", "details", "seconds"], rows)
               + ("\n\n" + "; ".join(extra) + "." if extra else ""))
    if exp.get("config"):
        rows = [[f"`{k}`", _short(v)] for k, v in _flatten(exp["config"])]
        doc.md("### Configuration\n\n" + md_table(["setting", "value"], rows))


def _headline(doc: Document, run: ExperimentResults) -> None:
    rows = []
    for name, res in run.align.items():
        for d in res.get("directions", []):
            ms = {m: v for m, v in d.get("methods", {}).items() if m not in F.BASELINES}
            if not ms:
                continue
            best = max(ms, key=lambda m: F.num(ms[m].get("test_centered")) if math.isfinite(
                F.num(ms[m].get("test_centered"))) else -9)
            base = d["methods"].get("trait_mean", {}).get("test_centered")
            delta = F.num(ms[best].get("test_centered")) - F.num(base)
            rows.append([f"`{name}`", F.direction_label(d), f"`{best}`", fmt_pm(ms[best].get("test_centered")),
                         fmt_pm(base), "—" if not math.isfinite(delta) else f"{delta:+.3f}"])
    if rows:
        doc.md("## Headline\n\nBest transfer method per direction by centered test cosine (mean ± std over trials), "
               "against the `trait_mean` baseline (the target's training mean of the same trait).\n\n"
               + md_table(["alignment", "direction (layers)", "best method", "centered test cos", "trait_mean",
                           "Δ"], rows))
    srows = []
    for d in (run.steer or {}).get("directions", []):
        conds = {c: v for c, v in d.get("conditions", {}).items() if v.get("kind") == "transferred"}
        if not conds:
            continue
        key = lambda c: F.num(((conds[c].get("summary") or {}).get("slope_ratio") or {}).get("mean"))  # noqa: E731
        best = max(conds, key=lambda c: key(c) if math.isfinite(key(c)) else -9)
        s = conds[best].get("summary") or {}
        srows.append([F.direction_label(d), f"`{best}`", fmt_ci(s.get("slope_ratio")), fmt_ci(s.get("pearson_r"))])
    if srows:
        doc.md(("" if rows else "## Headline\n\n") + "Steering: transferred vector with the largest slope ratio "
               "(its steering slope over the target's own vector's, mean over traits, 95 % bootstrap CI).\n\n"
               + md_table(["direction (layers)", "best transferred", "slope ratio", "Pearson r"], srows))


def _alignment_sections(doc: Document, run: ExperimentResults) -> None:
    if not run.align:
        return
    columns = [(f"{d.get('source')} →\n{d.get('target')}\nlayers {d.get('layer_source')}→{d.get('layer_target')}"
                + (f"\n[{name}]" if len(run.align) > 1 else ""), d)
               for name, res in run.align.items() for d in res.get("directions", [])]
    doc.md("## Alignment overview")
    doc.figure("align-pairs", "Method × directed model pair",
               "Centered test cosine of T(v_source) with the target's own vector (mean over trials) for every "
               "method and directed model pair" + (" of every alignment result." if len(run.align) > 1 else "."),
               lambda: F.pair_matrix_figure(columns))
    curves = variance_curves(run)
    if curves:
        srcs = {c["source"] for per in curves.values() for c in per.values()}
        doc.figure("pca-variance", "PCA variance explained",
                   "Cumulative fraction of the steering vectors' variance captured by the first principal components, "
                   "per model at the evaluated layer; dashed: the k used; dotted: 95 %; dots: the reported variance "
                   f"explained at k. Source: {', '.join(sorted(srcs))}.",
                   lambda: F.variance_figure(curves))
    else:
        doc.md("*(No PCA variance curves: results.json has no `variance_curve` and the extraction run it names "
               "was not found.)*")
    for name, res in run.align.items():
        doc.md(f"## Alignment: {name}")
        traits = res.get("traits")
        for d in res.get("directions", []):
            doc.figure(f"traits-{name}-{d.get('source')}-{d.get('target')}",
                       f"Per-trait transfer, {F.direction_label(d)} [{name}]",
                       "Centered test cosine per trait for each transfer method (bars, ± std over trials); grey band "
                       "and tick: the trait_mean baseline. Traits sorted by the best method.",
                       lambda d=d, traits=traits: F.trait_transfer_figure(d, traits))
        if any(d.get("scrambling") for d in res.get("directions", [])):
            doc.figure(f"scrambling-{name}", f"Scrambling hierarchy [{name}]",
                       "Centered test cosine when the map is fitted on proper pairs, on pairs shuffled within a trait, "
                       "and on pairs shuffled across traits (± std over trials). Proper > within > cross means the "
                       "map uses pair-level and trait-level correspondence.",
                       lambda res=res: F.scrambling_figure(res["directions"]))
        if res.get("sweep") and res["sweep"].get("pairs"):
            doc.figure(f"sweep-{name}", f"Layer sweep [{name}]",
                       "Procrustes centered test cosine for every source layer × target layer (mean over trials); "
                       "★ the chosen pair, ○ the best on test when it differs; grey cells are ineligible (a layer "
                       "with zero steering vectors).",
                       lambda res=res: F.layer_sweep_figure(res["sweep"]))
        doc.md(_align_markdown(res))


def _cond_label(name: str, c: dict) -> str:
    kind = c.get("kind")
    return f"`{name}`" + (" (control)" if kind == "control" else "")


def _steer_sections(doc: Document, run: ExperimentResults) -> None:
    st = run.steer
    if st is None:
        return
    cfg = st.get("config") or {}
    alphas = st.get("alphas") or cfg.get("alphas") or []
    desc = ", ".join(f"{k} `{json.dumps(v)}`" for k, v in cfg.items() if k != "alphas" and not isinstance(v, dict))
    doc.md("## Steering\n\n" + f"α ∈ {alphas}" + (f"; {desc}" if desc else "") + ". Intervals: 95 % bootstrap CIs.")
    models = st.get("models") or {}
    if models:
        _in_model_steering(doc, models)
    for d in st.get("directions", []):
        _transfer_section(doc, d, alphas)


def _in_model_steering(doc: Document, models: dict) -> None:
    """Each model steered with its own vectors: the check that native steering works before transfer is judged."""
    rows = []
    above = any((v.get("in_model") or {}).get("n_slope_above_zero") for v in models.values())
    for m, v in models.items():
        im = v.get("in_model") or {}
        rows.append([f"`{m}`", str(v.get("layer", "—")), fmt(v.get("mean_norm"), 2), str(im.get("n_traits", "—")),
                     str(im.get("n_monotonic", "—")), str(im.get("n_positive_slope", "—"))]
                    + ([fmt_ci(im.get("n_slope_above_zero"), 0)] if above else []))
    doc.md("### In-model steering (each model's own vectors)\n\n"
           + md_table(["model", "layer", "mean ‖h‖", "traits", "monotonic", "slope CI > 0"]
                      + (["mean slope > 0 [95 % CI]"] if above else []), rows))
    if any((v.get("in_model") or {}).get("traits") for v in models.values()):
        doc.figure("steer-in-model", "In-model steering slopes",
                   "Slope of the steering curve per trait with each model's own vector (95 % CI); hollow markers: "
                   "curve not monotonic in α.", lambda: F.in_model_slopes_figure(models))
        traits = sorted({t for v in models.values() for t in ((v.get("in_model") or {}).get("traits") or {})})
        rows = []
        for t in traits:
            row = [t]
            for m, v in models.items():
                tr = ((v.get("in_model") or {}).get("traits") or {}).get(t) or {}
                row.append(fmt_ci(tr.get("slope")) + (" ✓" if tr.get("monotonic") else ""))
            rows.append(row)
        doc.md("Per-trait slope (✓: monotonic):\n\n" + md_table(["trait"] + [f"`{m}`" for m in models], rows))


def _transfer_section(doc: Document, d: dict, alphas: list) -> None:
    """One direction's steering transfer: summary table, figures, per-trait tables, comparisons, generation."""
    conds = d.get("conditions") or {}
    names = F.ordered(conds, F.CONDITION_ORDER)
    doc.md(f"### Transfer {F.direction_label(d)}")
    doc.md(_condition_table(conds, names))
    if any((conds[c].get("summary") or {}).get("slope_ratio") for c in names if c != "native"):
        doc.figure(f"slopes-{d.get('source')}-{d.get('target')}", f"Slope ratio and curve agreement, "
                   f"{F.direction_label(d)}",
                   "Left: steering slope of each transferred or control vector over the slope of the target's own "
                   "vector (1 = as strong as native). Right: Pearson r between its α curve and the native curve. "
                   "Means over traits with 95 % bootstrap CIs; hatched bars are controls.",
                   lambda d=d: F.slope_ratio_figure(d))
    if alphas:
        doc.figure(f"alpha-{d.get('source')}-{d.get('target')}", f"α sweep per trait, {F.direction_label(d)}",
                   "Steering effect against α for each trait: the target's own vector (native, black with dots), "
                   "each transferred vector (solid, with 95 % bootstrap CI bands) and controls (dashed, no bands).",
                   lambda d=d: F.alpha_curves_figure(d, alphas))
    _per_trait_transfer(doc, conds, names)
    comps = d.get("comparisons") or []
    if comps:
        doc.md(_comparisons_table(comps))
    gen = d.get("generation") or {}
    if gen.get("conditions"):
        doc.md(_generation_check(gen))


def _condition_table(conds: dict, names: list[str]) -> str:
    """Per-condition summary against the native curve: the table a reader compares methods and controls by."""
    rows = []
    has_effect = any((conds[c].get("summary") or {}).get("effect_ratio") for c in names)
    has_mono = any("n_monotonic" in (conds[c].get("summary") or {}) for c in names)
    for c in names:
        v = conds[c]
        s = v.get("summary") or {}
        cos = [F.num(t.get("cosine_to_native")) for t in (v.get("traits") or {}).values()]
        cos = [x for x in cos if math.isfinite(x)]
        kind = str(v.get("kind") or "—") + (f" ({v['method']})" if v.get("method") not in (None, c) else "")
        row = [f"`{c}`", kind, fmt_ci(s.get("slope_ratio")),
               fmt_ci(s.get("pearson_r")), fmt_ci(s.get("mse"), 3)]
        row += [fmt_ci(s.get("effect_ratio"))] if has_effect else []
        row += [f"{sum(cos) / len(cos):.3f}" if cos else "—"]
        row += [str(s.get("n_monotonic", "—"))] if has_mono else []
        rows.append(row + [str(len(v.get("traits") or {}))])
    header = (["condition", "kind", "slope ratio", "Pearson r", "MSE"]
              + (["effect ratio (pooled)"] if has_effect else []) + ["cos to native"]
              + (["monotonic"] if has_mono else []) + ["traits"])
    return ("Per condition (slope ratio, Pearson r, MSE: per-trait comparisons with the native curve, mean over "
            "traits; effect ratio: mean slope over mean native slope, pairs pooled):\n\n" + md_table(header, rows))


def _per_trait_transfer(doc: Document, conds: dict, names: list[str]) -> None:
    """Per-trait slopes, and each condition's slope ratio / Pearson r with native: which traits carry over."""
    traits = sorted({t for c in names for t in (conds[c].get("traits") or {})})
    if not traits:
        return
    rows = [[t] + [fmt(((conds[c].get("traits") or {}).get(t) or {}).get("slope"), 3) for c in names]
            for t in traits]
    doc.md("Per-trait steering slope (mean):\n\n" + md_table(["trait"] + [_cond_label(c, conds[c]) for c in names],
                                                             rows))
    others = [c for c in names if c != "native"]
    if others:
        rows = []
        for t in traits:
            row = [t]
            for c in others:
                tr = (conds[c].get("traits") or {}).get(t) or {}
                row.append(f"{fmt(tr.get('slope_ratio'), 2)} / {fmt(tr.get('pearson_r'), 2)}")
            rows.append(row)
        doc.md("Per-trait slope ratio / Pearson r with the native curve:\n\n"
               + md_table(["trait"] + [_cond_label(c, conds[c]) for c in others], rows))


def _comparisons_table(comps: list[dict]) -> str:
    """Paired bootstrap differences between conditions: whether one beats another beyond noise."""
    rows = []
    for c in comps:
        delta = c.get("delta") or {}
        lo, hi = F.num(delta.get("lo")), F.num(delta.get("hi"))
        sig = "—" if not (math.isfinite(lo) and math.isfinite(hi)) else ("yes" if lo > 0 or hi < 0 else "no")
        rows.append([f"`{c.get('a')}`", f"`{c.get('b')}`", str(c.get("metric", "—")), fmt_ci(delta, 3),
                     str(c.get("n", "—")), sig])
    return ("Paired comparisons (bootstrap over trait × pair units):\n\n"
            + md_table(["a", "b", "metric", "Δ = a − b [95 % CI]", "n", "CI excludes 0"], rows))


def _generation_check(gen: dict) -> str:
    """Generated-text length per condition (at ±α when recorded): steering seen in free text, not only scores."""
    items = sorted(gen["conditions"].items(),
                   key=lambda kv: F.CONDITION_ORDER.index(kv[0]) if kv[0] in F.CONDITION_ORDER else 99)
    if gen.get("unsteered"):
        items = [("unsteered", gen["unsteered"])] + items
    signed = any("mean_length_plus" in v or "mean_length_minus" in v for _, v in items)
    if signed:
        rows = [[f"`{c}`", fmt_ci(v.get("mean_length_plus", v.get("mean_length")), 1),
                 fmt_ci(v.get("delta_plus"), 1), fmt_ci(v.get("mean_length_minus", v.get("mean_length")), 1),
                 fmt_ci(v.get("delta_minus"), 1)] for c, v in items]
        header = ["condition", "length at +α", "Δ vs unsteered", "length at −α", "Δ vs unsteered"]
    else:
        rows = [[f"`{c}`", fmt_ci(v.get("mean_length"), 1)] for c, v in items]
        header = ["condition", "mean length [95 % CI]"]
    n = f" over {gen['n_prompts']} prompts" if gen.get("n_prompts") else ""
    return (f"Generation check: trait `{gen.get('trait', '?')}` at α = {'±' if signed else ''}"
            f"{gen.get('alpha', '?')}, mean length "
            f"(words) of the generated text{n}:\n\n" + md_table(header, rows))


def _answer_section(doc: Document, run: ExperimentResults) -> None:
    """First screen: one sentence and one figure on how well transfer worked against the baselines."""
    doc.md("## Answer\n\n" + answer.sentence(run))
    doc.figure("answer", "How well transfer worked",
               "Left: centered cosine of transferred vectors with the target's own, per map and baseline "
               "(in-distribution held-out pairs and, when present, out-of-distribution pairs). Right: the behavioural "
               "effect of transferred vectors and controls as a ratio to the target's own vector (1 = native, dotted).",
               lambda: answer.figure(run))


def _judge_sections(doc: Document, run: ExperimentResults) -> None:
    beh = run.judge.get("behaviour")
    if beh:
        _behaviour_section(doc, beh)
    ood = run.judge.get("ood")
    if ood:
        _ood_section(doc, ood)
    few = run.judge.get("fewshot")
    if few:
        _fewshot_section(doc, few)
    ab = run.judge.get("ab")
    if ab:
        _ab_section(doc, ab)
    if run.sae_quality or run.sae_features:
        _sae_section(doc, run)


def _sae_section(doc: Document, run) -> None:
    """Sparse autoencoders: how good each is, and what the steering vectors are made of in their features."""
    from ..sae.features import features_markdown
    from ..sae.quality import quality_markdown

    text = "## Sparse autoencoders\n\n"
    if run.sae_quality:
        text += ("Held-out text; FVU: fraction of variance unexplained; CE loss recovered: 1 = the clean model, "
                 "0 = the layer zero-ablated.\n\n" + quality_markdown(run.sae_quality) + "\n")
    for f in run.sae_features:
        text += "\n##" + features_markdown(f.get("vector"), f.get("sae"), f.get("layer"), f["features"])
    doc.md(text)


def _ab_section(doc: Document, ab: dict) -> None:
    """The A/B protocol (Contrastive Activation Addition): the choice, not the text."""
    from ..judge.ab import markdown

    body = markdown(ab).split("\n", 1)[1].replace("\n## ", "\n### ")  # the judge's own tables, one level down
    doc.md("## A/B behaviour protocol: does steering move the model's choice?\n" + body)


def _behaviour_section(doc: Document, beh: dict) -> None:
    """Independent judges of steered text: the behavioural check that does not reuse the model's own read-out."""
    from ..judge import figures as JF

    cfg = beh.get("config", {})
    judges = beh.get("judges", {})
    doc.md("## Behaviour: independent judges of steered text\n\n"
           f"{len(beh.get('prompts', []))} held-out neutral prompts, {cfg.get('max_new_tokens')} new tokens, greedy; "
           "each condition steers the target at ±a; the judge change is against the unsteered text of the same "
           "prompt; effect = (+a − −a)/2; ratios to the native effect with 95 % paired bootstrap intervals over "
           "prompts. Judges: " + "; ".join(f"`{t}`: {j.get('measures', j.get('judge'))}" for t, j in judges.items())
           + ". Fluency guard: the unsteered model's per-token log-prob of the steered text may drop by at most "
           f"{cfg.get('max_logprob_drop')} nat and the repetition rate rise by at most {cfg.get('max_repetition_rise')}.")
    for d in beh.get("directions", []):
        m = (d.get("modes") or {}).get("greedy")
        if m:
            doc.md(_behaviour_direction(d, m, cfg, judges))
    doc.figure("behaviour-traits", "Independent judges per trait",
               "Judge effect (half the +a minus −a difference, in SDs of the unsteered scores) per trait and "
               "condition, 95 % CI over prompts; × marks a failed fluency guard.",
               lambda: JF.behaviour_traits_figure(beh))


def _behaviour_direction(d: dict, m: dict, cfg: dict, judges: dict) -> str:
    """One direction's greedy judge results (choice of a, pooled and per-trait tables) as one markdown block."""
    lines = [f"### Judges: {d['source']} → {d['target']} (layers {d['layer_source']}→{d['layer_target']}, "
             f"a = {d.get('alpha')} × mean ‖h‖)", ""]
    cal = d.get("calibration")
    if cal:
        lines += ["Choice of a: " + cal.get("rule", "") + ". " + "; ".join(
            f"a = {r['alpha']}: log-prob drop {fmt(r['logprob_drop'], 2)}, repetition "
            f"{fmt(r['repetition_rise'], 3)}, native effect {fmt(r['std_effect'], 2)} SD"
            + (f", guard passed for {r['n_guard_pass']}/{len(r['guard_per_trait'])} traits"
               if r.get("guard_per_trait") else "")
            + ("" if r["fluent"] else " (not fluent)") for r in cal.get("grid", [])) + ".", ""]
    rows = [[f"`{c}`", fmt_ci(v["pooled"].get("std_effect")), fmt_ci(v["pooled"].get("ratio_to_native")),
             f"{v['pooled'].get('n_effect_ci_above_zero')}/{v['pooled'].get('n_traits')}",
             f"{v['pooled'].get('n_guard_pass')}/{v['pooled'].get('n_traits')}"]
            for c, v in m["conditions"].items()]
    lines.append(md_table(["condition", "effect (SD of unsteered), pooled", "ratio to native",
                           "traits with effect CI > 0", "fluency guard passed"], rows))
    trows = []
    for t in cfg.get("traits", []):
        for c, v in m["conditions"].items():
            r = v["traits"].get(t)
            if r:
                trows.append([f"{t}", f"`{c}`", fmt_ci(r["delta_plus"]), fmt_ci(r["delta_minus"]),
                              fmt_ci(r.get("ratio_to_native")),
                              f"{fmt(r['logprob_drop_plus'], 2)} / {fmt(r['logprob_drop_minus'], 2)}",
                              f"{fmt(r['repetition_rise_plus'], 3)} / {fmt(r['repetition_rise_minus'], 3)}",
                              "ok" if r["guard"] else "FAIL"])
    return ("\n".join(lines) + "\n\nPer trait (judge units: " + ", ".join(
        f"{t} {judges.get(t, {}).get('unit', '')}" for t in cfg.get("traits", [])) + "):\n\n" + md_table(
        ["trait", "condition", "Δ at +a", "Δ at −a", "ratio to native", "log-prob drop +/−",
         "repetition rise +/−", "guard"], trows))


def _ood_section(doc: Document, ood: dict) -> None:
    """Maps scored on separately written pairs: whether transfer holds outside the shipped pairs' style."""
    from ..judge import figures as JF

    rows = []
    for d in ood.get("directions", []):
        for c, r in d["conditions"].items():
            tv = r.get("ood_trait_vector_cosine")
            rows.append([f"{d['source']} → {d['target']}", f"`{c}`", fmt_ci(r["in_distribution"]["centered"], 3),
                         fmt_ci(r["ood_seen"]["centered"], 3), fmt_ci(r["ood_unseen"]["centered"], 3),
                         fmt(F.num(r["ood_seen"]["centered"]["mean"]) - F.num(r["in_distribution"]["centered"]["mean"])),
                         fmt(sum(tv.values()) / len(tv)) if tv else "—"])
    t = ood.get("ood_traits", {})
    doc.md("## Out-of-distribution pairs\n\nMaps fitted on the shipped pairs' training split, scored on the "
           f"shipped test split (in-distribution) and on {sum(t.get('pairs', {}).values())} separately written pairs "
           f"in other registers and formats (`stf_jax/data/ood_pairs`; seen traits: {', '.join(t.get('seen', []))}; "
           f"unseen: {', '.join(t.get('unseen', []))}). Centered cosine, 95 % bootstrap CI over pairs; the last "
           "column is the cosine of each OOD trait's carried mean vector with the target's own OOD trait vector.\n\n"
           + md_table(["direction", "condition", "in-distribution", "OOD seen traits", "OOD unseen traits",
                       "OOD − in (seen)", "OOD trait-vector cos"], rows))
    doc.figure("ood", "In-distribution vs out-of-distribution", "Centered cosine per map and baseline; solid: "
               "first direction, faded: second.", lambda: JF.ood_figure(ood))


def _fewshot_section(doc: Document, few: dict) -> None:
    """Map quality against the number of training traits and pairs: how little data a usable map needs."""
    from ..judge import figures as JF

    rows = []
    for d in few.get("directions", []):
        for c in d.get("cells", []):
            if c["method"] == "fit_mean":
                continue
            rows.append([f"{d['source']} → {d['target']}", f"`{c['method']}`", str(c["n_traits"]),
                         str(c["pairs_per_trait"] or "all"), fmt_ci(c["centered"], 3), fmt_ci(c["trait_cos"], 3)])
    doc.md("## Few-shot maps (the Preference-Vector idea)\n\nHow map quality grows with the number of training traits and pairs "
           "per trait; scored on held-out traits only (mean and 2.5–97.5 % range over random trait subsets).\n\n"
           + md_table(["direction", "method", "traits", "pairs/trait", "centered cosine (pairs)",
                       "trait-vector cosine"], rows))
    doc.figure("fewshot", "Few-shot curve", "Centered cosine on held-out traits' pairs (left) and the held-out "
               "trait vectors' cosine with the target's own (right; red dotted: the mean of the fitted target rows).",
               lambda: JF.fewshot_figure(few))


def _kinds_section(doc: Document, run: ExperimentResults) -> None:
    """Transfer by vector kind (`python -m stf_jax.transfer kinds`): one figure and its tables."""
    if run.kinds is None:
        return
    from ..transfer.kinds import kinds_markdown, kinds_plot

    doc.md("## Transfer by vector kind\n\nDoes a map carry vectors of traits, and kinds, it never saw? Each map "
           "is refitted without the trait (or its whole kind) and the trait's carried vector is compared with the "
           "target model's own, for maps fitted on styles only, on the mixture of kinds, and on corpora only.")
    doc.figure("kinds", "Carried-vs-native cosine by vector kind",
               "Mean over traits the map never saw and layer pairs where the target's own vector is stable; one bar "
               "per training recipe; dashed line: 0.5.", lambda: kinds_plot(run.kinds))
    doc.md(kinds_markdown(run.kinds))


def build(run: ExperimentResults) -> Document:
    doc = Document(f"Steering-vector transfer report: {run.name}")
    _answer_section(doc, run)
    _headline(doc, run)
    _judge_sections(doc, run)
    _alignment_sections(doc, run)
    _steer_sections(doc, run)
    _kinds_section(doc, run)
    _experiment_section(doc, run)  # configuration and stage tables last
    return doc


# ----------------------------------------------------------------------------------------------------------------
# markdown


def to_markdown(doc: Document, figure_dir: str = "figures") -> str:
    out = [f"# {doc.title}", "", f"Generated {datetime.now().isoformat(timespec='seconds')} by `python -m "
           f"stf_jax.report`; `report.html` next to this file holds the same content with the figures embedded.", ""]
    for b in doc.blocks:
        if isinstance(b, FigureBlock):
            if b.error:
                out += [f"*Figure {b.number} ({b.id}) failed: {b.error}*", ""]
            else:
                out += [f"![{b.title}]({figure_dir}/{b.id}.png)", "",
                        f"*Figure {b.number} (`{b.id}`): {b.title}. {b.caption}*", ""]
        else:
            out += [b, ""]
    figs = doc.figures
    if figs:
        out += ["## Figures", ""]
        out += [f"{b.number}. `{b.id}`: {b.title}" + (f" (failed: {b.error})" if b.error else
                                                       f" ([{figure_dir}/{b.id}.png]({figure_dir}/{b.id}.png))")
                for b in figs]
        out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


# ----------------------------------------------------------------------------------------------------------------
# HTML

CSS = """
:root { --fg:#1b1b1b; --muted:#5f6368; --line:#dadce0; --bg:#fff; --band:#f6f8fa; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
.page { display:grid; grid-template-columns: 250px minmax(0, 1fr); }
nav { position:sticky; top:0; height:100vh; overflow-y:auto; padding:18px 14px; border-right:1px solid var(--line);
      background:var(--band); font-size:13px; }
nav ul { list-style:none; padding-left:0; margin:0; }
nav ul ul { padding-left:12px; }
nav li { margin:3px 0; }
nav a { color:var(--fg); text-decoration:none; }
nav a:hover { color:var(--accent); text-decoration:underline; }
nav .nav-title { font-weight:600; margin-bottom:8px; }
main { padding:24px 36px 80px; max-width:1500px; }
h1 { font-size:26px; margin:0 0 6px; }
h2 { font-size:21px; margin:38px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:17px; margin:26px 0 8px; }
h4 { font-size:15px; margin:20px 0 6px; }
p { margin:8px 0; max-width:1100px; }
code { font:13px/1.3 "DejaVu Sans Mono", Menlo, Consolas, monospace; background:#eef1f4; padding:1px 4px;
       border-radius:3px; }
.meta { color:var(--muted); font-size:13px; }
.table-wrap { overflow-x:auto; margin:10px 0 18px; width:fit-content; max-width:100%; border:1px solid var(--line);
              border-radius:4px; }
table { border-collapse:collapse; font-size:13px; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); white-space:nowrap; text-align:left; }
thead th { background:var(--band); position:sticky; top:0; font-weight:600; }
tbody tr:nth-child(even) td { background:#fafbfc; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
td:first-child, th:first-child { position:sticky; left:0; background:#fff; }
thead th:first-child { background:var(--band); }
figure { margin:18px 0 26px; }
figure { width:fit-content; max-width:100%; }
figure img { display:block; max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; max-width:1100px; }
.fig-error { color:#b00020; }
ul.plain { padding-left:20px; }
@media print { nav { display:none; } .page { display:block; } }
"""

_NUMERIC = re.compile(r"^[−+\-]?(\d|\.\d)[\d.,eE+\-]*(\s*(±|\[).*)?$")


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
            continue
        s = html.escape(p, quote=False)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", s)
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: m.group(1) if "://" in m.group(2)
                   else f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
        out.append(s)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def md_to_html(text: str, ids: set[str], toc: list[tuple[int, str, str]]) -> str:
    """The markdown subset the report uses: ATX headings, pipe tables, '- ' / '1. ' lists, paragraphs, inline
    code / bold / italics."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        st = line.strip()
        m = re.match(r"^(#{1,6})\s+(.*)$", st)
        if m:
            flush()
            level = min(len(m.group(1)), 6)
            title = m.group(2)
            hid, n = "sec-" + slug(re.sub(r"[`*]", "", title)), 2
            base = hid
            while hid in ids:
                hid, n = f"{base}-{n}", n + 1
            ids.add(hid)
            if level in (2, 3):
                toc.append((level, hid, re.sub(r"[`*]", "", title)))
            out.append(f'<h{level} id="{hid}">{_inline(title)}</h{level}>')
            i += 1
        elif st.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            header = _split_row(block[0])
            body = block[2:] if len(block) > 1 and re.match(r"^\|?[\s:\-|]+\|?$", block[1].strip()) else block[1:]
            h = "".join(f"<th>{_inline(c)}</th>" for c in header)
            rows = []
            for r in body:
                cells = _split_row(r)
                rows.append("<tr>" + "".join(
                    f'<td class="num">{_inline(c)}</td>' if j and _NUMERIC.match(c) else f"<td>{_inline(c)}</td>"
                    for j, c in enumerate(cells)) + "</tr>")
            out.append(f'<div class="table-wrap"><table><thead><tr>{h}</tr></thead><tbody>{"".join(rows)}'
                       f"</tbody></table></div>")
        elif re.match(r"^(-|\d+\.)\s+", st):
            flush()
            ordered_list = bool(re.match(r"^\d+\.", st))
            items = []
            while i < len(lines) and re.match(r"^(-|\d+\.)\s+", lines[i].strip()):
                items.append(re.sub(r"^(-|\d+\.)\s+", "", lines[i].strip()))
                i += 1
            tag = "ol" if ordered_list else "ul"
            out.append(f'<{tag} class="plain">' + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
        elif not st:
            flush()
            i += 1
        else:
            para.append(st)
            i += 1
    flush()
    return "\n".join(out)


def _figure_html(b: FigureBlock) -> str:
    cap = f"<figcaption><strong>Figure {b.number}.</strong> {_inline(b.title)}. {_inline(b.caption)}</figcaption>"
    if b.error or not b.png:
        return (f'<figure id="{b.id}"><p class="fig-error">Figure {b.number} could not be drawn: '
                f"{html.escape(b.error or 'empty image')}</p>{cap}</figure>")
    w, h = b.size
    data = base64.b64encode(b.png).decode("ascii")
    return (f'<figure id="{b.id}"><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}" '
            f'width="{w}" height="{h}" loading="eager">{cap}</figure>')


def to_html(doc: Document) -> str:
    ids: set[str] = set()
    toc: list[tuple[int, str, str]] = []
    body = []
    for b in doc.blocks:
        if isinstance(b, FigureBlock):
            body.append(_figure_html(b))
        else:
            body.append(md_to_html(b, ids, toc))
    figs = doc.figures
    if figs:
        toc.append((2, "sec-figures", "Figures"))
        body.append('<h2 id="sec-figures">Figures</h2><ol class="plain">' + "".join(
            f'<li><a href="#{b.id}">{_inline(b.title)}</a> <span class="meta">({b.id})</span></li>' for b in figs)
            + "</ol>")
    nav, open_sub = ['<div class="nav-title">Contents</div><ul>'], False
    for level, hid, title in toc:
        if level == 3 and not open_sub:
            nav.append("<ul>")
            open_sub = True
        elif level == 2 and open_sub:
            nav.append("</ul>")
            open_sub = False
        nav.append(f'<li><a href="#{hid}">{html.escape(title)}</a></li>')
    nav.append("</ul>" * (2 if open_sub else 1))
    stamp = datetime.now().isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<div class="page"><nav>{"".join(nav)}</nav>\n<main>\n<h1 id="top">{html.escape(doc.title)}</h1>\n'
        f'<p class="meta">Generated {stamp} by <code>python -m stf_jax.report</code>; self-contained: '
        f"{len(figs)} figures embedded.</p>\n" + "\n".join(body) + "\n</main></div>\n</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------------------------


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, dpi: int = 110) -> tuple[Path, Path]:
    """Read RUN_DIR (experiment.json, align/*/results.json, steer/steer_results.json) and write report.md (with
    its figures as PNGs under figures/) and a self-contained report.html into out_dir [RUN_DIR].
    Returns (md_path, html_path). Raises ReportInputError when RUN_DIR holds no results."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build(run)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for b in doc.figures:
        b.render(dpi=dpi)
        if b.png:
            (fig_dir / f"{b.id}.png").write_bytes(b.png)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(to_markdown(doc))
    html_path.write_text(to_html(doc))
    return md_path, html_path
