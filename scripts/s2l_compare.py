"""l2l (affine) against s2l and many-to-one, causally: steering-effect ratio, judged behaviour and the A/B choice.

    python scripts/s2l_compare.py --geometry --run   # run what is missing (about 2 h on 2 cores), print the tables
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
  native vectors) with vectors from the style traits and from the OOD pairs;
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
BEHAVIOUR_KINDS = {"styles": "behaviour", "ood": "behaviour_ood"}  # run -> results folder
# how the s2l answer moves with SAE size and k (smollm2 layer 15 SAEs; k 32 is in the main table)
SAE_VARIANTS = (("8x_k4608", SAES["smollm2-135m"], 4608),
                ("16x_k32", "runs/sae/smollm2-135m_l15_16x_k32/sae", 32),
                ("16x_k9216", "runs/sae/smollm2-135m_l15_16x_k32/sae", 9216))


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
    for kind, folder in BEHAVIOUR_KINDS.items():
        for src, sae in SAES.items():
            d = OUT / folder / src
            out.append((d / "behaviour_results.json", py + ["stf_jax.judge", "behaviour", f"runs/mix/{kind}",
                                                            "--source", src, *LAYERS, *CARRY, "--sae", sae,
                                                            "--out", str(d)]))
    for name, sae, k in SAE_VARIANTS:  # s2l alone (beside native), styles, smollm2 -> gemma3
        d = OUT / "steer_sae" / name
        out.append((d / "steer_results.json", py + ["stf_jax.steer", "eval", "runs/mix/styles", "--source",
                                                    "smollm2-135m", *LAYERS, "--methods", "s2l", "--controls",
                                                    "--alphas", "-0.2", "0.2", "--generation-trait", "", "--sae", sae,
                                                    "--sae-k", str(k), "--pairs-per-trait", "4", "--out", str(d)]))
    for src, sae in SAES.items():
        d = OUT / "ab" / src
        out.append((d / "ab_results.json", py + ["stf_jax.judge", "ab", "runs/ab_letter", "--source", src, *LAYERS,
                                                 *CARRY, "--sae", sae, "--out", str(d)]))
    return out


def _ci(x: dict, digits: int = 2) -> str:
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def geometry(kinds=("styles", "ab", "ood")) -> None:
    """Held-out centered cosine of each map (the split every map file records) per vector kind, at the steered
    target layer, half depth (smollm2 15, gemma3 9: source 15 or 9 for affine; the SAE's layer for s2l; the stack
    for many-to-one)."""
    from stf_jax.transfer.fit import fit_map_set

    path = OUT / "geometry.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    for kind in kinds:
        for src, sae in SAES.items():
            tgt = next(m for m in SAES if m != src)
            lt = {"gemma3-270m": 9, "smollm2-135m": 15}[tgt]
            for method in ("affine", "s2l", "many_to_one"):
                key = f"{kind} {SHORT[src]}→{SHORT[tgt]} {method}"
                if key not in res:
                    ms = fit_map_set(f"runs/mix/{kind}", src, tgt, method, "0.5", sae=sae if method == "s2l" else None,
                                     log=lambda *a: None)
                    res[key] = ms.maps[lt].header["quality"]["centered_cosine"]
                    path.write_text(json.dumps(res, indent=1))
                    print(key, res[key], flush=True)


def geometry_table() -> list[str]:
    path = OUT / "geometry.json"
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    rows = ["| kind | direction | affine | s2l | many_to_one |", "| --- | --- | --- | --- | --- |"]
    for key in dict.fromkeys(k.rsplit(" ", 1)[0] for k in res):
        rows.append(f"| {key.replace(' ', ' | ')} | " + " | ".join(
            f"{res[f'{key} {m}']:.3f}" if f"{key} {m}" in res else "–" for m in ("affine", "s2l", "many_to_one")) + " |")
    return rows


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


def sae_table() -> list[str]:
    rows = ["| s2l through | cosine to native | effect ratio |", "| --- | --- | --- |"]
    main = OUT / "steer" / "styles" / "smollm2-135m" / "steer_results.json"
    for name, path in [("8x_k32", main)] + [(n, OUT / "steer_sae" / n / "steer_results.json") for n, *_ in SAE_VARIANTS]:
        if path.exists():
            s2l = json.loads(path.read_text())["directions"][0]["conditions"]["s2l"]
            cos = [t["cosine_to_native"] for t in s2l["traits"].values()]
            rows.append(f"| {name.replace('_', ' SAE, ')} | {sum(cos) / len(cos):.3f} | "
                        f"{_ci(s2l['summary']['effect_ratio'])} |")
    return rows


def behaviour_table() -> list[str]:
    rows = ["| kind | direction (a) | condition | std effect | ratio to native | traits with effect CI > 0 | guard passed |",
            "|" + " --- |" * 7]
    for kind, src in ((k, s) for k in BEHAVIOUR_KINDS for s in SAES):
        path = OUT / BEHAVIOUR_KINDS[kind] / src / "behaviour_results.json"
        if not path.exists():
            continue
        for d in json.loads(path.read_text())["directions"]:
            for c, row in d["modes"]["greedy"]["conditions"].items():
                p = row["pooled"]
                ratio = _ci(p["ratio_to_native"]) if "ratio_to_native" in p else "–"
                rows.append(f"| {kind} | {SHORT[d['source']]}→{SHORT[d['target']]} ({d['alpha']}) | {c} | "
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
    ap.add_argument("--geometry", action="store_true", help="fit the maps per vector kind for the cosine table")
    args = ap.parse_args()
    if args.geometry:
        geometry()
    if args.run:
        for path, cmd in commands():
            if not path.exists():
                print("$", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True)
    for title, table in (("Held-out centered cosine of the carried pair vectors", geometry_table),
                         ("Propensity (steer eval)", steer_table),
                         ("s2l by SAE size and k (styles, smollm2 → gemma3)", sae_table),
                         ("Judged behaviour (judge behaviour, greedy)", behaviour_table),
                         ("A/B choice (judge ab)", ab_table)):
        print(f"\n## {title}\n")
        print("\n".join(table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
