"""results.json (every number) and results.md (the tables a reader wants) from evaluate()'s dict."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..markdown import table_lines
from ..extract.rundir import SCRAMBLES


def _f(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "—"
    if stat.get("std"):
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    out = ["# Steering-vector transfer evaluation", ""]
    out.append(f"{results['n_pairs']} contrast pairs, {len(results['traits'])} traits; {cfg['trials']} trials "
               f"(split seeds {cfg['seeds']}, test fraction {cfg['test_fraction']}); array `{cfg['array']}`; "
               f"PCA k = {cfg['k'] if cfg['k'] else 'by variance ' + str(cfg['variance'])}"
               f"{', rotation only' if cfg['rotation_only'] else ''}; affine ridge {cfg['ridge']}; "
               f"adapter loss `{cfg['adapter']['loss']}`. Values: mean ± std over trials.")
    out.append("")
    out.append("Cosine of T(v_s) with the target's own v_t on held-out pairs; *centered* = after subtracting the "
               "target's training mean from both (what a map adds beyond the mean direction).")
    out.append("")
    dirs = results["directions"]
    for d in dirs:
        out += _direction_lines(d)
    for d in dirs:
        out += _per_trait_lines(d, results)
    if results.get("sweep"):
        out += _sweep_lines(results["sweep"])
    return "\n".join(out) + "\n"


def _direction_lines(d: dict[str, Any]) -> list[str]:
    """One direction's method table (best first), its margin over trait_mean, variance and scrambling."""
    out = [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']}"
           + (f", k = {d['k']}" if d.get("k") else "") + ")", ""]
    rows = []
    order = sorted(d["methods"], key=lambda m: -d["methods"][m]["test_centered"]["mean"])
    for m in order:
        v = d["methods"][m]
        rows.append([f"`{m}`", _f(v["test"]), _f(v["test_centered"]), _f(v["train"]), _f(v["gap"]),
                     _f(v["gap_centered"]), _f(v.get("scale"))])
    out += table_lines(["method", "test cos", "test cos centered", "train cos", "gap", "gap centered", "scale s"], rows)
    if "trait_mean" in d["methods"]:
        tm = d["methods"]["trait_mean"]["test_centered"]["mean"]
        best = order[0]
        delta = d["methods"][best]["test_centered"]["mean"] - tm
        out += ["", f"Best on centered test cosine: `{best}`, {delta:+.3f} over the `trait_mean` baseline."]
    if d.get("variance_explained"):
        out += ["", "Variance explained by the k axes: " + ", ".join(
            f"{m} {_f(v)}" for m, v in d["variance_explained"].items())]
    if d.get("scrambling"):
        out += ["", "Scrambling hierarchy (test cosine; centered / raw):", ""]
        rows = [[f"`{m}`"] + [f"{_f(v[s]['test_centered'])} / {_f(v[s]['test'])}" for s in SCRAMBLES]
                for m, v in d["scrambling"].items()]
        out += table_lines(["method", "proper", "within-trait shuffle", "cross-trait shuffle"], rows)
    out.append("")
    return out


def _per_trait_lines(d: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Per-trait test cosines (centered, then raw) of one direction: which traits a map carries."""
    out = []
    for metric, title in (("per_trait_test_centered", "centered"), ("per_trait_test", "raw")):
        cols = [m for m in d["methods"] if not (m == "mean_target" and title == "centered")]
        out += [f"## Per-trait test cosine ({title}), {d['source']} → {d['target']} "
                f"(layers {d['layer_source']} → {d['layer_target']})", ""]
        rows = [[f"{t} ({results['trait_counts'][t]})"] + [_f(d["methods"][m][metric][t], 2) for m in cols]
                for t in results["traits"]]
        out += table_lines(["trait (pairs)"] + [f"`{m}`" for m in cols], rows)
        out.append("")
    return out


def _sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """The layer sweep: the chosen layer pair per direction, the alternatives, and the cosine matrix."""
    out = ["## Layer sweep (Procrustes; matrix: centered test cosine, mean over trials)", ""]
    for key, s in sweep["pairs"].items():
        b = s["best"]
        ineligible = [(ls, lt) for ls, row in zip(s["layers_source"], s["eligible"])
                      for lt, ok in zip(s["layers_target"], row) if not ok]
        if ineligible:
            zeros = sweep.get("zero_vectors", {})
            out.append(f"Layer pairs involving a layer with zero steering vectors ({zeros}) are scored on the "
                       f"remaining pairs only and are not eligible as best ({len(ineligible)} cells).")
            out.append("")
        bt = s["best_on_test"]
        out.append(f"**{s['source']} → {s['target']}** (k = {s['k']}): best layers {b['layer_source']} → "
                   f"{b['layer_target']} by centered cosine on the validation slice ({b['validation_centered']:.3f}); "
                   f"test centered {b['test_centered']:.3f} (raw {b['test']:.3f}). Picked on test instead: "
                   f"{bt['layer_source']} → {bt['layer_target']} ({bt['test_centered']:.3f}); by raw test cosine: "
                   f"{s['best_raw']['layer_source']} → {s['best_raw']['layer_target']} ({s['best_raw']['test']:.3f}).")
        out.append("")
        header = ["src \\ tgt"] + [str(l) for l in s["layers_target"]]
        rows = [[str(ls)] + [f"{v:.2f}" for v in row] for ls, row in zip(s["layers_source"], s["test_centered"])]
        out += table_lines(header, rows)
        out.append("")
    return out


def write_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    js.write_text(json.dumps(results, indent=1, allow_nan=True, default=str) + "\n")
    md.write_text(markdown(results))
    return js, md
