"""steer_results.json, its markdown tables, and the alpha-sweep curves as CSV (for plotting)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_write_bytes
from ..core.stats import format_ci
from ..markdown import table_lines


_ci = format_ci  # 'mean [lo, hi]', the one format (core.stats)


def _f(x, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [*table_lines(header, rows), ""]


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    out = ["# Steering: native vs transferred vectors", "",
           f"Additive steering h + α·|h|·v̂ at every token, α ∈ {results['alphas']} (units of the layer's mean "
           f"residual norm); propensity = mean log P(positive | prompt) − mean log P(negative | prompt) over the "
           f"first {cfg['max_continuation_tokens']} tokens of each side, {cfg['pairs_per_trait']} held-out pairs per "
           f"trait; 95% bootstrap intervals over pairs ({cfg['bootstrap']} resamples).", ""]
    out += ["## In-model check (each model's own vectors)", ""]
    rows = []
    for name, m in results["models"].items():
        im = m["in_model"]
        rows.append([name, str(m["layer"]), _f(m["mean_norm"], 1), f"{im['n_monotonic']}/{im['n_traits']}",
                     f"{im['n_positive_slope']}/{im['n_traits']}", _ci(im.get("n_slope_above_zero"), 0)])
    out += _table(["model", "layer", "mean |h|", "monotonic in α", "slope CI > 0", "slope > 0 (bootstrap CI)"], rows)

    for d in results["directions"]:
        conds = d["conditions"]
        out += [f"## {d['source']} → {d['target']} (layers {d['layer_source']} → {d['layer_target']})", ""]
        ex = d.get("exactness", {})
        if ex.get("n_pairs"):
            out += [f"Exactness: α = 0 max |Δ log p| = {ex['alpha0_max_abs_diff']:.1e}; self-injection "
                    f"max |Δ log p| = {ex['self_injection_max_abs_diff']:.1e} ({ex['n_pairs']} pairs).", ""]
        rows = []
        for c, e in conds.items():
            s = e["summary"]
            rows.append([c, e["kind"], _f(sum(t["cosine_to_native"] for t in e["traits"].values()) / len(e["traits"])),
                         _ci(s["slope"]), _ci(s.get("effect_ratio")), _ci(s["pearson_r"]), _ci(s["mse"], 3),
                         f"{s['n_monotonic']}/{len(e['traits'])}", f"{s['n_positive_slope']}/{len(e['traits'])}"])
        out += ["### Conditions (summary over traits)", ""]
        out += _table(["condition", "kind", "cos to native", "slope", "slope / native slope", "Pearson r (curves)",
                       "MSE (curves)", "monotonic", "slope CI > 0"], rows)
        out += ["### Paired comparisons (per-pair slope difference, paired bootstrap)", ""]
        out += _table(["a", "b", "Δ slope (a − b)", "pairs"],
                      [[c["a"], c["b"], _ci(c["delta"]), str(c["n"])] for c in d["comparisons"]])
        transferred = [c for c, e in conds.items() if e["kind"] == "transferred"]
        header = ["trait", "native slope"] + [f"{c} slope (ratio, r)" for c in transferred]
        rows = []
        for t, nat in conds["native"]["traits"].items():
            row = [t, _ci(nat["slope"], 1)]
            for c in transferred:
                e = conds[c]["traits"][t]
                row.append(f"{e['slope']['mean']:.1f} ({_f(e['slope_ratio'])}, {_f(e['pearson_r'])})")
            rows.append(row)
        out += ["### Per trait", ""] + _table(header, rows)
        gen = d.get("generation")
        if gen:
            out += [f"### Generation: {gen['trait']} (words, {gen['n_prompts']} prompts, ≤ {gen['max_new_tokens']} "
                    f"new tokens, α = ±{gen['alpha']})", "",
                    f"Unsteered mean length {_ci(gen['unsteered']['mean_length'], 1)}.", ""]
            out += ["Trait read-out = the target's own unsteered last-token state of prompt + completion at the "
                    "steered layer, projected on its native trait vector; Δ vs the unsteered completion.", ""]
            out += _table(["condition", "length at +α", "Δ vs unsteered", "length at −α", "Δ vs unsteered",
                           "Δ read-out at +α", "Δ read-out at −α"],
                          [[c, _ci(g["mean_length_plus"], 1), _ci(g["delta_plus"], 1), _ci(g["mean_length_minus"], 1),
                            _ci(g["delta_minus"], 1), _ci(g.get("trait_score_delta_plus"), 1),
                            _ci(g.get("trait_score_delta_minus"), 1)] for c, g in gen["conditions"].items()])
    return "\n".join(out) + "\n"


def curves_csv(results: dict[str, Any]) -> str:
    """The alpha-sweep curves, one row per (direction, condition, trait, alpha)."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["source", "target", "condition", "trait", "alpha", "mean", "lo", "hi"])
    for d in results["directions"]:
        for c, e in d["conditions"].items():
            for t, row in e["traits"].items():
                for a, m, lo, hi in zip(results["alphas"], row["curve"]["mean"], row["curve"]["lo"],
                                        row["curve"]["hi"]):
                    w.writerow([d["source"], d["target"], c, t, a, m, lo, hi])
    return buf.getvalue()


def write_steer_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path, Path]:
    """steer_results.json, steer_results.md and curves.csv in out_dir (written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "steer_results.json", out / "steer_results.md", out / "curves.csv"
    texts = json.dumps(results, indent=1, allow_nan=True) + "\n", markdown(results), curves_csv(results)
    for path, text in zip(paths, texts):
        atomic_write_bytes(path, text.encode())
    return paths
