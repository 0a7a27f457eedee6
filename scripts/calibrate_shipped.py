"""Calibrated layer and strength for shipped traits on both shipped models, against the fixed defaults.

    python scripts/calibrate_shipped.py                      # 4 traits x 2 models, ~15 min on 2 CPU cores
    python scripts/calibrate_shipped.py --traits formality --models smollm2-135m --llamacpp

For each model and trait: a mean-difference vector trained on the trait's train split (shipped pairs) at
four candidate layers (the library's default layer -6 and relative depths 0.35, 0.5, 0.65), then
`stf_jax.calibrate` on the test split. The default setting (layer -6, 0.15 x typical |h|) is a point of the
same grid, so both are measured the same way: the propensity effect on held-out pairs and the fluency guard
at +a and -a. With --llamacpp, the calibrated file is also run by llama.cpp at strength 1
(`--control-vector-scaled FILE:1`) beside `steer generate --alpha 1`, greedy, on one prompt.
Writes OUT/calibrate_shipped.json and .md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_LAYER, DEFAULT_STRENGTH = "-6", 0.15
DEPTHS = ("0.35", "0.5", "0.65")
TRAITS = ("formality", "verbosity", "optimism", "humor")
PROMPT = "Write a note to your neighbour about the noise:"


def calibrate_trait(model, trait: str, log) -> dict:
    import stf_jax
    from stf_jax.core.layers import resolve_layers
    from stf_jax.data import load_pairs
    from stf_jax.data.split import split_pairs

    n = model.config.n_layers
    default = resolve_layers(DEFAULT_LAYER, n)[0]
    layers = sorted({default, *resolve_layers(list(DEPTHS), n)} - {0, n})
    pairs = load_pairs("shipped", traits=[trait])
    train = set(split_pairs(pairs).train)
    vector = stf_jax.train_vector(model, [p for p in pairs if p.id in train], layers=layers, trait=trait)
    t0 = time.perf_counter()
    cal = stf_jax.calibrate(model, vector, trait=trait, log=log)
    seconds = time.perf_counter() - t0
    at = {(r["layer"], r["strength"]): r for r in cal.rows}
    d = at[(default, DEFAULT_STRENGTH)]
    c = at.get((cal.layer, cal.strength))
    return {"trait": trait, "layers": layers, "seconds": seconds, "calibration": cal,
            "default": {"layer": default, "strength": DEFAULT_STRENGTH, "effect": d["effect"], "fluent": d["fluent"]},
            "chosen": None if c is None else {"layer": cal.layer, "strength": cal.strength, "effect": c["effect"],
                                              "fluent": c["fluent"], "added_norm": c["added_norm"]}}


def llamacpp_check(model_name: str, model, path: Path) -> dict:
    """llama.cpp at FILE:1, FILE:-1 and unsteered, and stf_jax at --alpha 1 (stored scale), greedy, raw prompt;
    llama.cpp's three texts scored teacher-forced by stf_jax steered with the same file at strength 1 (the
    shift is > 0 where the text is what the steering favours: steered > unsteered > opposite when llama.cpp
    applies the file at the right layer, sign and scale)."""
    import stf_jax
    from stf_jax.bench.llamacpp import complete, steering_shift
    from stf_jax.models.registry import resolve

    gguf = resolve(model_name)
    texts = [complete(gguf, PROMPT, 24, "--control-vector-scaled", f"{path}:1"), complete(gguf, PROMPT, 24),
             complete(gguf, PROMPT, 24, "--control-vector-scaled", f"{path}:-1")]
    shift = steering_shift(model, stf_jax.SteeringVector.load(path).directions, 1.0, PROMPT, texts)
    plain, steered, _ = stf_jax.steer(model, path, [PROMPT], 1.0, max_new_tokens=24)
    return {"prompt": PROMPT, "llamacpp_steered": texts[0], "llamacpp_unsteered": texts[1],
            "llamacpp_opposite": texts[2], "stf_jax_unsteered": plain[0], "stf_jax_steered": steered[0],
            "shift_steered_unsteered_opposite": [float(x) for x in shift]}


def markdown(results: list[dict]) -> str:
    lines = ["| model | trait | default (layer, a): effect [95% CI], fluent | calibrated (layer, a): effect [95% CI], "
             "fluent | \\|v\\| stored | seconds |", "|---|---|---|---|---|---|"]
    def show(x: dict) -> str:
        e = x["effect"]
        return f"({x['layer']}, {x['strength']:g}): {e['mean']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}], " + \
            ("yes" if x["fluent"] else "no")

    for r in results:
        c = r["chosen"]
        chosen, stored = (show(c), f"{c['added_norm']:.1f}") if c else (f"none: {r['reason']}", "-")
        lines.append(f"| {r['model']} | {r['trait']} | {show(r['default'])} | {chosen} | {stored} | "
                     f"{r['seconds']:.0f} |")
    by_model = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    for m, rs in by_model.items():
        lines.append(f"\n{m}: default passes the guard for {sum(r['default']['fluent'] for r in rs)}/{len(rs)} traits; "
                     f"a calibrated setting exists for {sum(r['chosen'] is not None for r in rs)}/{len(rs)}; mean "
                     f"effect default {sum(r['default']['effect']['mean'] for r in rs) / len(rs):+.2f}, calibrated "
                     f"{sum(r['chosen']['effect']['mean'] for r in rs if r['chosen']) / max(1, sum(bool(r['chosen']) for r in rs)):+.2f} nats/token")
    return "\n".join(lines) + "\n"


def main() -> None:
    import stf_jax
    from stf_jax.bench.device import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--traits", nargs="+", default=list(TRAITS))
    ap.add_argument("--llamacpp", action="store_true", help="also run the first trait's file in llama.cpp at :1")
    ap.add_argument("--out", default="runs/calibrate_shipped")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("machine:", cpu_flags())
    results = []
    for name in args.models:
        model = stf_jax.load_model(name)
        for i, trait in enumerate(args.traits):
            r = calibrate_trait(model, trait, log=lambda *a: print(*a, flush=True))
            cal = r.pop("calibration")
            written = cal.save(out / f"{name}__{trait}", f"{trait}.gguf")
            r.update(model=name, reason=cal.reason)
            if args.llamacpp and i == 0 and cal.vector is not None:
                r["llamacpp"] = llamacpp_check(name, model, written[-1])
                print(json.dumps(r["llamacpp"], indent=1))
            results.append(r)
            print(f"{name} {trait}: default {r['default']['effect']['mean']:+.2f} "
                  f"({'fluent' if r['default']['fluent'] else 'NOT fluent'}), chosen {r['chosen']}; {r['seconds']:.0f} s",
                  flush=True)
    (out / "calibrate_shipped.json").write_text(json.dumps(results, indent=1))
    md = markdown(results)
    (out / "calibrate_shipped.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
