r"""python -m stf_jax.transfer: fit maps between two models, and carry your own steering vectors with them.

  fit    fit a map set on an extraction run's pairs, report held-out quality, save it
      python -m stf_jax.transfer fit runs/shipped_all --source smollm2-135m --target gemma3-270m \
          --method affine --layers depth --out maps/smollm2__gemma3
      python -m stf_jax.transfer fit runs/styles runs/ab runs/dialogue runs/corpus --weights 1 1 0.5 1 \
          --source smollm2-135m --target gemma3-270m --layers depth --out maps/general   # a mixture of sources
  apply  carry control vectors (llama.cpp / repeng .gguf, stf_jax .gguf/.safetensors, .npy with --layer,
         or directories of them: a vector library) to the target model; writes control vectors
      python -m stf_jax.transfer apply --map maps/smollm2__gemma3 formality.gguf --out carried/
      llama-completion -m gemma3.gguf --control-vector-scaled carried/formality.gguf:1.0 -p "..."
      python -m stf_jax.transfer apply --map shipped:smollm2-135m->gemma3-270m formality.gguf --out carried/

Coverage: each carried layer is scored by how much of the input direction lies where its map was fitted
(0..1, stored in the output as stf_jax.coverage); below --coverage-threshold a warning names the layer,
and --strict refuses the vector (exit 2).

Strength: by default the output keeps the input's strength *relative to each layer's typical |h|*, so
the llama.cpp/repeng strength that worked with the source model is the one to try with the target
(--strength keep: same absolute norm; unit: norm 1).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from ..options import LazyChoices

    parser = argparse.ArgumentParser(prog="python -m stf_jax.transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a map set from an extraction run")
    fit.add_argument("run", nargs="+", help="extraction run directory holding both models (python -m stf_jax.extract); "
                                            "several: a mixture of sources (affine), each a pairs run (--pairs "
                                            "shipped|ab|dialogue|corpus|FILE) or a corpus run (--corpus: token "
                                            "states, paired by token or by text mean)")
    fit.add_argument("--weights", type=float, nargs="+",
                     help="one weight per run: its share of the training rows (mixture) [1 each]")
    fit.add_argument("--exclude-traits", nargs="+", default=[], metavar="TRAIT",
                     help="traits left out of every source (e.g. held out for evaluation)")
    fit.add_argument("--overwrite", action="store_true", help="replace a map set already in --out")
    fit.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                     help="storage of the map files (float16 halves them) [float32]")
    fit.add_argument("--source", required=True, help="model the vectors come from (as named in the run)")
    fit.add_argument("--target", required=True, help="model to carry them to")
    fit.add_argument("--method", default="affine", choices=LazyChoices("stf_jax.align.maps", "MAP_SET_METHODS"),
                     metavar="METHOD", help="alignment method: %(choices)s [affine: the best steering-effect ratio on the shipped models]")
    fit.add_argument("--layers", default="-6",
                     help="layer pairs: an HF index in both models (-6), 'depth' (every steerable target layer "
                          "from the source layer at the same relative depth: for multi-layer control vectors), "
                          "or 'sweep:RESULTS.json' (best source layer per target layer from an alignment sweep) [-6]")
    fit.add_argument("--sae", help="s2l: the source model's SAE at the source layer (python -m stf_jax.sae train; "
                                   "an sae-lens directory too)")
    fit.add_argument("--sae-k", type=int, help="s2l: SAE coefficients a vector keeps [the SAE's k]")
    fit.add_argument("--stack", type=int, default=6,
                     help="many_to_one: source layers read together for every target layer, spread over depth [6]")
    fit.add_argument("--out", required=True, help="map-set directory to write")
    fit.add_argument("--k", type=int, help="PCA components for procrustes [by --variance]")
    fit.add_argument("--variance", type=float, default=0.95, help="explained variance that picks k [0.95]")
    fit.add_argument("--ridge", type=float, help="relative ridge of the affine map [the method's: 0.1; s2l 1; "
                                                 "many_to_one 10]")
    fit.add_argument("--rotation-only", action="store_true", help="procrustes: proper rotations only")
    fit.add_argument("--seed", type=int, default=0, help="split (and adapter) seed [0]")
    fit.add_argument("--test-fraction", type=float, default=0.2, help="held-out share for the quality figure [0.2]")
    fit.add_argument("--no-norms", action="store_true",
                     help="do not load the models to measure each layer's typical |h| (then apply needs "
                          "--strength keep or unit)")
    fit.add_argument("--norm-texts", type=int, default=64, help="texts for the typical |h| [64]")

    kinds = sub.add_parser("kinds", help="evaluate maps by vector kind (leave-one-trait-out / leave-one-kind-out), "
                                         "both directions; writes kinds.json, kinds.md, kinds.png")
    kinds.add_argument("--kind", nargs="+", required=True, metavar="KIND=RUN",
                       help="one extraction run per kind of data, e.g. styles=runs/styles ab=runs/ab "
                            "dialogue=runs/dialogue corpus=runs/corpus ood=runs/ood")
    kinds.add_argument("--models", nargs=2, required=True, metavar=("A", "B"), help="the two models (both directions)")
    kinds.add_argument("--eval-only", nargs="*", default=["ood"], help="kinds never fitted on [ood]")
    kinds.add_argument("--weights", nargs="*", default=[], metavar="KIND=W", help="mixture weights [1 each]")
    kinds.add_argument("--recipe", nargs="*", default=[], metavar="NAME=KIND,KIND",
                       help="training recipes to compare [styles=styles mixture=styles,ab,dialogue,corpus "
                            "corpus=corpus]")
    kinds.add_argument("--layers", default="depth", help="layer pairs, as for fit [depth]")
    kinds.add_argument("--every", type=int, default=1, help="evaluate every n-th layer pair [1]")
    kinds.add_argument("--ridge", type=float, default=0.1, help="relative ridge [0.1]")
    kinds.add_argument("--out", required=True, help="output directory")

    app = sub.add_parser("apply", help="carry vector files (or libraries) through a map set")
    app.add_argument("inputs", nargs="+", help=".gguf/.safetensors control vectors, .npy vectors, or directories")
    app.add_argument("--map", required=True, help="map-set directory (or one map file) from `fit`, or a shipped set: "
                                                  "shipped:smollm2-135m->gemma3-270m (or the reverse)")
    app.add_argument("--out", required=True, help="output directory (names mirror the inputs)")
    app.add_argument("--layer", type=int, help="source HF layer of .npy inputs (or pick one layer of a file)")
    app.add_argument("--strength", default="relative", choices=["relative", "keep", "unit"],
                     help="output norm: relative to each layer's typical |h| (default), as the input, or 1")
    app.add_argument("--format", default="gguf", choices=["gguf", "safetensors"], help="output format [gguf]")
    app.add_argument("--force", action="store_true",
                     help="carry vectors whose file names another model than the map set's source (a different "
                          "model name or llama.cpp model hint); refused otherwise")
    app.add_argument("--strict", action="store_true",
                     help="refuse (exit 2) a vector whose coverage is below the threshold at any carried layer")
    app.add_argument("--coverage-threshold", type=float, help="coverage below which to warn / refuse [0.5]")
    app.add_argument("--quiet", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda *a: None) if getattr(args, "quiet", False) else (lambda *a: print(*a, file=sys.stderr, flush=True))
    from . import TransferInputError, fit_map

    if args.command == "fit":
        mixture = len(args.run) > 1 or args.weights is not None or args.exclude_traits
        extra = {} if mixture else {"k": args.k, "variance": args.variance, "rotation_only": args.rotation_only}
        fit_map(args.run if mixture else args.run[0], args.source, args.target, args.method, args.layers, out=args.out,
                norms=not args.no_norms, norm_texts=args.norm_texts, log=log, weights=args.weights,
                exclude_traits=args.exclude_traits, dtype=args.dtype, overwrite=args.overwrite, ridge=args.ridge,
                seed=args.seed, test_fraction=args.test_fraction, stack=args.stack, sae=args.sae, sae_k=args.sae_k,
                **extra)
        print(f"wrote map set {args.out}")
        return 0
    if args.command == "kinds":
        return _kinds(args, log)
    if args.coverage_threshold is not None and not 0 <= args.coverage_threshold <= 1:
        raise TransferInputError(f"--coverage-threshold {args.coverage_threshold}: give a number in [0, 1]")
    from .library import read_library

    library = read_library(args.inputs, args.out, args.layer, args.format)  # before JAX and the maps: fails fast
    from . import load_map_set, transfer_files

    map_set = load_map_set(args.map)
    written = transfer_files(map_set, library, args.out, layer=args.layer, strength=args.strength,
                             fmt=args.format, strict=args.strict, threshold=args.coverage_threshold, log=log,
                             force=args.force)
    for path, carried in written:
        cov = carried.coverage
        log(f"{path}: target layers {sorted(carried.directions)}"
            + (f"; coverage {min(cov.values()):.2f}-{max(cov.values()):.2f}" if cov else "; coverage not recorded")
            + (f"; no input for target layers {carried.report['target_layers_without_input']}"
               if carried.report["target_layers_without_input"] else ""))
    low = sum(bool(c.low_coverage(args.coverage_threshold)) for _, c in written)
    print(f"wrote {len(written)} control vector(s) for {map_set.target['name']} under {args.out}"
          + (f"; {low} with low coverage at some layer (see the warnings; --strict refuses them)" if low else ""))
    return 0


def _assignments(items, what: str, cast=str) -> dict:
    from . import TransferInputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise TransferInputError(f"{what} {item!r}: write KIND=VALUE")
        try:
            out[key] = cast(value)
        except ValueError:
            raise TransferInputError(f"{what} {item!r}: {value!r} is not a number") from None
    return out


def _kinds(args, log) -> int:
    from . import TransferInputError
    from .kinds import kinds_markdown, kinds_report

    runs = _assignments(args.kind, "--kind")
    recipes = {k: tuple(v.split(",")) for k, v in _assignments(args.recipe, "--recipe").items()} or None
    unknown = sorted({k for v in (recipes or {}).values() for k in v} - set(runs))
    if unknown:
        raise TransferInputError(f"--recipe names kind(s) {unknown} not given with --kind")
    result = kinds_report(runs, args.models, args.out, eval_only=args.eval_only, recipes=recipes,
                          weights=_assignments(args.weights, "--weights", float), layers=args.layers,
                          every=args.every, ridge=args.ridge, log=log)
    print(kinds_markdown(result))
    print(f"wrote {args.out}/kinds.json, kinds.md, kinds.png")
    return 0


if __name__ == "__main__":
    cli_main(main)
