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
   weights, dataset hashes and one hash of the whole mixture).
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODELS = ("smollm2-135m", "gemma3-270m")
SOURCES = {"styles": ["--pairs", "shipped", "--per-trait", "60"], "ab": ["--pairs", "ab"],
           "dialogue": ["--pairs", "dialogue"], "corpus": ["--pairs", "corpus"]}
WEIGHTS = {"styles": 1.0, "ab": 1.0, "dialogue": 0.5, "corpus": 1.0}
# evaluation-only traits: never in the shipped maps' training data
RESERVED = ("humor", "urgency", "empathy", "precision", "power_seeking", "honesty", "playfulness")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/shipped_maps", help="where the source runs are extracted [runs/shipped_maps]")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "stf_jax" / "maps"),
                   help="map-set root [stf_jax/maps]")
    p.add_argument("--ridge", type=float, default=0.1)
    args = p.parse_args(argv)

    from stf_jax.extract.__main__ import main as extract
    from stf_jax.transfer import fit_map

    runs = Path(args.runs)
    for kind, flags in SOURCES.items():
        if not (runs / kind / "manifest.json").is_file():
            rc = extract(["--models", *MODELS, *flags, "--layers", "all", "--out", str(runs / kind)])
            if rc:
                return rc
    for src, tgt in (MODELS, MODELS[::-1]):
        out = Path(args.out) / f"{src}__{tgt}"
        fit_map([runs / k for k in SOURCES], src, tgt, layers="depth", weights=[WEIGHTS[k] for k in SOURCES],
                exclude_traits=RESERVED, ridge=args.ridge, out=out, dtype="float16")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
