"""l2l (affine) against s2l and many-to-one, causally: steering-effect ratio, judged behaviour and the A/B choice.

    python scripts/s2l_compare.py --run        # run what is missing (about 1.5 h on 2 cores), then print the tables
    python scripts/s2l_compare.py              # print the tables of what is there

Every evaluation steers smollm2-135m layer 15 ↔ gemma3-270m layer 9 (the layers of the 8x SAEs,
`python -m stf_jax.sae train --model M --layer L --corpus shipped --latents 8x --k 32 --tokens 600000`), with
vectors carried leave-one-trait-out by affine (l2l), s2l (through the source model's SAE, k = the SAE's 32)
and many-to-one (6 source layers spread over depth), beside the target's own (native) vector and the random
and shuffled controls. Per vector kind:

- propensity (`steer eval`): the style traits (`runs/mix/styles`, 26 traits, 4 held-out pairs each) and the
  hand-written OOD pairs (`runs/mix/ood`, 10 traits, 3 each of a 30 % test split); alphas −0.2, 0, 0.2 × mean
  |h| (A/B items are scored by their answer letter below: as pairs, their sides differ only there);
- judged behaviour (`judge behaviour`, 7 judges, 24 held-out prompts, strength calibrated per target on
  native vectors) on the style traits;
- CAA's A/B protocol (`judge ab`, matching-letter probability on held-out items) on `runs/ab_letter`.

One direction per command (`--source`): s2l needs the source model's SAE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OUT = Path("runs/s2l_compare")
SAES = {"smollm2-135m": "runs/sae/smollm2-135m_l15_8x_k32/sae", "gemma3-270m": "runs/sae/gemma3-270m_l9_8x_k32/sae"}
SHORT = {"smollm2-135m": "s", "gemma3-270m": "g"}
LAYERS = ["--layers", "smollm2-135m:15", "gemma3-270m:9"]
CARRY = ["--methods", "affine", "s2l", "many_to_one", "--controls", "random", "shuffled"]
# A/B items are not scored by propensity: as pairs their sides differ only in the answer letter (steer eval
# refuses them); `judge ab` scores that letter instead
STEER_KINDS = {"styles": ["--pairs-per-trait", "4"], "ood": ["--pairs-per-trait", "3", "--test-fraction", "0.3"]}
CONDITIONS = ("affine", "s2l", "many_to_one", "random", "shuffled")


def commands() -> list[tuple[Path, list[str]]]:
    """(the result file, the command that writes it), in run order."""
    py = [sys.executable, "-m"]
    out = []
    for kind, extra in STEER_KINDS.items():
        for src, sae in SAES.items():
            d = OUT / "steer" / kind / src
            out.append((d / "steer_results.json", py + ["stf_jax.steer", "eval", f"runs/mix/{kind}", "--source", src,
                                                        *LAYERS, *CARRY, "--alphas", "-0.2", "0.2",
                                                        "--generation-trait", "", "--sae", sae, *extra,
                                                        "--out", str(d)]))
    for src, sae in SAES.items():
        d = OUT / "behaviour" / src
        out.append((d / "behaviour_results.json", py + ["stf_jax.judge", "behaviour", "runs/mix/styles", "--source",
                                                        src, *LAYERS, *CARRY, "--sae", sae, "--out", str(d)]))
    for src, sae in SAES.items():
        d = OUT / "ab" / src
        out.append((d / "ab_results.json", py + ["stf_jax.judge", "ab", "runs/ab_letter", "--source", src, *LAYERS,
                                                 *CARRY, "--sae", sae, "--out", str(d)]))
    return out


def _ci(x: dict, digits: int = 2) -> str:
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def steer_table() -> list[str]:
    rows = ["| kind | direction | native slope | " + " | ".join(f"{c} effect ratio" for c in CONDITIONS)
            + " | s2l − affine slope | many_to_one − affine slope |", "|" + " --- |" * (5 + len(CONDITIONS))]
    cos_rows = ["| kind | direction | " + " | ".join(f"{c} cosine to native" for c in ("affine", "s2l", "many_to_one"))
                + " |", "|" + " --- |" * 5]
    for kind in STEER_KINDS:
        for src in SAES:
            path = OUT / "steer" / kind / src / "steer_results.json"
            if not path.exists():
                continue
            d = json.loads(path.read_text())["directions"][0]
            conds, comp = d["conditions"], {(c["a"], c["b"]): c["delta"] for c in d["comparisons"]}
            name = f"{SHORT[d['source']]}→{SHORT[d['target']]}"
            rows.append(f"| {kind} | {name} | {_ci(conds['native']['summary']['slope'])} | "
                        + " | ".join(_ci(conds[c]["summary"]["effect_ratio"]) for c in CONDITIONS)
                        + f" | {_ci(comp[('s2l', 'affine')])} | {_ci(comp[('many_to_one', 'affine')])} |")
            cos = {c: [t["cosine_to_native"] for t in conds[c]["traits"].values()] for c in ("affine", "s2l", "many_to_one")}
            cos_rows.append(f"| {kind} | {name} | " + " | ".join(f"{sum(v) / len(v):.3f}" for v in cos.values()) + " |")
    return rows + [""] + cos_rows


def behaviour_table() -> list[str]:
    rows = ["| direction (a) | condition | std effect | ratio to native | traits with effect CI > 0 | guard passed |",
            "|" + " --- |" * 6]
    for src in SAES:
        path = OUT / "behaviour" / src / "behaviour_results.json"
        if not path.exists():
            continue
        for d in json.loads(path.read_text())["directions"]:
            for c, row in d["modes"]["greedy"]["conditions"].items():
                p = row["pooled"]
                ratio = _ci(p["ratio_to_native"]) if "ratio_to_native" in p else "–"
                rows.append(f"| {SHORT[d['source']]}→{SHORT[d['target']]} ({d['alpha']}) | {c} | "
                            f"{_ci(p['std_effect'])} | {ratio} | {p['n_effect_ci_above_zero']}/{p['n_traits']} | "
                            f"{p['n_guard_pass']}/{p['n_traits']} |")
    return rows


def ab_table() -> list[str]:
    rows = ["| direction | p unsteered | " + " | ".join(f"{c} slope" for c in ("native",) + CONDITIONS) + " |",
            "|" + " --- |" * (3 + len(CONDITIONS))]  # slope of the matching-letter probability per unit a
    for src in SAES:
        path = OUT / "ab" / src / "ab_results.json"
        if not path.exists():
            continue
        for d in json.loads(path.read_text())["directions"]:
            pooled = d["pooled"]
            zero = json.loads(path.read_text())["strengths"].index(0.0)
            rows.append(f"| {SHORT[d['source']]}→{SHORT[d['target']]} | {pooled['native']['p'][zero]:.3f} | "
                        + " | ".join(_ci(pooled[c]["slope"], 3) for c in ("native",) + CONDITIONS) + " |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="store_true", help="run the evaluations whose results are missing")
    args = ap.parse_args()
    if args.run:
        for path, cmd in commands():
            if not path.exists():
                print("$", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True)
    for title, table in (("Propensity (steer eval)", steer_table), ("Judged behaviour (judge behaviour, greedy)",
                                                                      behaviour_table), ("A/B choice (judge ab)", ab_table)):
        print(f"\n## {title}\n")
        print("\n".join(table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
