"""Refit the shipped general map sets (stf_jax/maps/): one command, resumable.

    python scripts/fit_shipped_maps.py            # extract what is missing under runs/shipped_maps, fit, write

1. Extracts every source with both shipped models at every layer (resumes a killed run; a finished run
   is reused): the 26 style traits (60 pairs each), the A/B behaviour items, the dialogue pairs and the
   corpus pairs (`--pairs shipped|ab|dialogue|corpus`).
2. Fits affine maps on their weighted mixture (`transfer fit RUN... --weights`), both directions, every
   steerable target layer from the source layer at the same relative depth, with the RESERVED traits left
   out of every source (they, and the OOD pairs, are what the maps are evaluated on: README), and each
   layer's typical |h| measured for the relative strength convention.
3. Writes float16 map sets to stf_jax/maps/SOURCE__TARGET (each map header records the sources, their
   weights, dataset hashes and one hash of the whole mixture; coverage bases keep 256 axes).
4. Scores the written map sets on what they never saw: the reserved traits and the OOD pairs (carried
   trait vector vs the target's own, per layer pair, with coverage), and writes stf_jax/maps/README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODELS = ("smollm2-135m", "gemma3-270m")
SOURCES = {"styles": ["--pairs", "shipped", "--per-trait", "60"], "ab": ["--pairs", "ab"],
           "dialogue": ["--pairs", "dialogue"], "corpus": ["--pairs", "corpus"]}
EVAL_ONLY = {"ood": ["--pairs", "ood"]}
WEIGHTS = {"styles": 1.0, "ab": 1.0, "dialogue": 0.5, "corpus": 1.0}
# evaluation-only traits: never in the shipped maps' training data
RESERVED = {"styles": ("humor", "urgency", "empathy", "precision"), "ab": ("power_seeking", "honesty"),
            "dialogue": ("playfulness",), "ood": None}  # ood: every trait (never fitted on)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/shipped_maps", help="where the source runs are extracted [runs/shipped_maps]")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "stf_jax" / "maps"),
                   help="map-set root [stf_jax/maps]")
    p.add_argument("--ridge", type=float, default=0.1)
    p.add_argument("--score-only", action="store_true", help="only score the map sets already written")
    args = p.parse_args(argv)

    from stf_jax.extract.__main__ import main as extract
    from stf_jax.transfer import fit_map, load_map_set

    runs = Path(args.runs)
    for kind, flags in {**SOURCES, **EVAL_ONLY}.items():
        if not (runs / kind / "manifest.json").is_file():
            rc = extract(["--models", *MODELS, *flags, "--layers", "all", "--out", str(runs / kind)])
            if rc:
                return rc
    reserved = [t for k in SOURCES for t in RESERVED.get(k) or ()]
    sections = []
    for src, tgt in (MODELS, MODELS[::-1]):
        out = Path(args.out) / f"{src}__{tgt}"
        if not args.score_only:
            fit_map([runs / k for k in SOURCES], src, tgt, layers="depth", weights=[WEIGHTS[k] for k in SOURCES],
                    exclude_traits=reserved, ridge=args.ridge, out=out, dtype="float16", coverage_axes=256,
                    overwrite=True)
            print(f"wrote {out}")
        sections.append(_score(load_map_set(out), runs))
    _write_readme(Path(args.out) / "README.md", sections, reserved)
    return 0


def _score(map_set, runs: Path) -> str:
    from stf_jax.transfer.kinds import STABLE, score_map_set, score_table, spearman

    rows = score_map_set(map_set, {k: str(runs / k) for k in RESERVED}, dict(RESERVED))
    table = score_table(rows)
    name = f"{map_set.source['name']}->{map_set.target['name']}"
    lines = [f"### shipped:{name} ({len(map_set.maps)} layer pairs)", "",
             f"| held-out kind | carried vs native cosine, stable rows (split-half ≥ {STABLE}) | all rows | "
             "rows (stable / all) |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['stable']:.2f} | {v['all']:.2f} | {v['n_stable']} / {v['n']} |" for k, v in table.items()]
    st = [r for r in rows if r["split_half"] >= STABLE]
    lines += ["", f"Coverage vs cosine, Spearman: {spearman([r['coverage'] for r in rows], [r['cosine'] for r in rows]):.2f} "
              f"over all {len(rows)} rows, {spearman([r['coverage'] for r in st], [r['cosine'] for r in st]):.2f} over "
              f"the {len(st)} stable rows.", ""]
    print("\n".join(lines))
    return "\n".join(lines)


def _write_readme(path: Path, sections: list[str], reserved: list[str]) -> None:
    from stf_jax.core.atomic import atomic_write_text

    head = ["# Shipped general map sets", "",
            "Affine maps between the two shipped models, both directions, every steerable target layer (from the "
            "source layer at the same relative depth), fitted on a weighted mixture of the shipped style pairs (60 "
            "per trait), A/B behaviour items, dialogue turns and corpus pairs (weights "
            + ", ".join(f"{k} {w}" for k, w in WEIGHTS.items()) + "), float16, with coverage bases. "
            "Load with `stf_jax.load_map(\"shipped:smollm2-135m->gemma3-270m\")` or `--map shipped:…`.", "",
            f"Never fitted on (held out for the figures below): traits {', '.join(reserved)}, and the OOD pairs. "
            "Each row: one trait's vector (mean unit pair vector over all its pairs) at one layer pair, carried and "
            "compared with the target model's own vector for the trait. Refit and rescore: "
            "`python scripts/fit_shipped_maps.py --runs runs/mix` (measured figures below).", ""]
    atomic_write_text(path, "\n".join(head + sections) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
