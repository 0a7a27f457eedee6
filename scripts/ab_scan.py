"""Where do the shipped models answer A/B items from behaviour? Native vectors only, per layer and pooling.

    python scripts/ab_scan.py runs/ab_letter runs/ab_last runs/ab_whole runs/ab_chat

Each run is an extraction of one form of the shipped items (`stf_jax.data.ab`): --pairs ab with --pooling
letter and last, --pairs ab-whole (the whole answer, --pooling last), --pairs ab-chat with --chat-template
(smollm2-135m only: gemma3-270m's GGUF carries no chat template). For each run, each model and layers at relative depths 0.3-0.8:
the A/B protocol (`stf_jax.judge.ab`) with the model's own vectors from the train items and a random
control, on the held-out items: the unsteered matching-letter probability, its slope over strength (a x
typical |h|, a in -1..1) with a 95% interval, and the behaviours whose native slope interval lies above 0.
"""

from __future__ import annotations

import argparse
import json
import time

DEPTHS = ("0.3", "0.45", "0.6", "0.75")


def main() -> None:
    from stf_jax.bench.device import cpu_flags
    from stf_jax.core.layers import resolve_layers
    from stf_jax.core.stats import format_ci
    from stf_jax.extract.rundir import find_models
    from stf_jax.judge.ab import ABConfig, evaluate_ab

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--strengths", type=float, nargs="+", default=[-1.0, -0.5, 0.0, 0.5, 1.0])
    ap.add_argument("--out", default="runs/ab_scan.json")
    ap.add_argument("--models", nargs="+", help="only these target models [every model of each run]")
    args = ap.parse_args()
    print("machine:", cpu_flags())
    cfg = ABConfig(strengths=tuple(args.strengths), methods=(), controls=("random",), bootstrap=500)
    rows = []
    print("| run | model | layer | p unsteered | native slope | random slope | behaviours that respond |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        refs = find_models([run])
        names = sorted(refs)
        for target in [m for m in names if not args.models or m in args.models]:
            source = next((n for n in names if n != target), target)  # a one-model run (ab-chat): itself
            n, n_s = refs[target].n_layers, refs[source].n_layers
            for depth in DEPTHS:  # the source layer only has to exist: no map is fitted (native and random only)
                layer, layer_s = resolve_layers(depth, n)[0], resolve_layers(depth, n_s)[0]
                t0 = time.perf_counter()
                res = evaluate_ab(run, cfg, layers={(source, target): (layer_s, layer)}, directions=[(source, target)],
                                  log=lambda *a: None)
                d = res["directions"][0]
                pooled = d["pooled"]
                zero = res["strengths"].index(0.0)
                responds = [b for b, s in d["per_behaviour"].items() if s["native"]["slope"]["lo"] > 0]
                rows.append({"run": run, "model": target, "layer": layer, "p0": pooled["native"]["p"][zero],
                             "native": pooled["native"]["slope"], "random": pooled["random"]["slope"],
                             "responds": responds, "per_behaviour": {b: s["native"] for b, s in d["per_behaviour"].items()},
                             "seconds": time.perf_counter() - t0})
                print(f"| {run} | {target} | {layer} | {pooled['native']['p'][zero]:.3f} | "
                      f"{format_ci(pooled['native']['slope'], 3)} | {format_ci(pooled['random']['slope'], 3)} | "
                      f"{', '.join(responds) or 'none'} |", flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
