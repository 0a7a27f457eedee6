"""python -m stf_jax.align: fit cross-model maps on an extraction run and score steering-vector transfer.

Examples:
  python -m stf_jax.align runs/x --layer -6 --out runs/align/layer-6
  python -m stf_jax.align runs/x --layer-sweep --k 64 --out runs/align/sweep
  python -m stf_jax.align runs/x --methods procrustes trait_mean --source smollm2-135m --target gemma3-270m \\
      --k 128 --rotation-only --trials 5 --out runs/align/p

Writes OUT/results.json (every number, with config, seeds and input hashes), OUT/results.md (tables),
OUT/adapters/<src>__to__<tgt>/<kind>/ (orbax checkpoints, trials stacked on axis 0) and OUT/curves/.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError, cli_main, report_user_error
from ..options import add_fields, fields_from_args
from .adapters import AdapterConfig
from .evaluate import ALL_METHODS, METHODS, EvalConfig, evaluate
from ..extract.rundir import AlignInputError
from .report import write_results


class AlignArgumentError(AlignInputError):
    """Arguments that do not make a valid configuration (reported as one line, exit 2)."""


# EvalConfig / AdapterConfig fields offered as flags (the experiment YAML's align keys spell them the same).
_SIZE_FLAGS = {
    "k": "PCA components, common to both models [chosen by --variance]",
    "variance": "choose k as the smallest count explaining this variance fraction of every model's training vectors",
}
_PROTOCOL_FLAGS = {
    "trials": "trials; trial i splits with seed + i",
    "seed": "first split seed",
    "test_fraction": "held-out share per trait",
    "val_fraction": "share of the training split held out to early-stop adapters and pick the sweep's layer pair",
    "rotation_only": "Procrustes with det(R) = +1 (no reflections)",
    "ridge": "affine ridge, relative to the mean eigenvalue of the source Gram; 0 = least squares",
    "scramble": "methods also fitted on within-/cross-trait shuffled pairs (none: skip)",
    "array": "stored array to align: unit steering vectors or raw differences",
}
_TOKEN_PAIRING_HELP = "affine_tokens: pair token rows (same tokenizer) or per-text mean states"
_ADAPTER_FLAGS = {
    "loss": "training loss",
    "rank": "lowrank rank",
    "hidden": "mlp hidden units",
    "learning_rate": "AdamW learning rate",
    "weight_decay": "AdamW weight decay on matrices",
    "orthogonality": "weight of the scale-free orthogonality penalty (linear, lowrank)",
    "max_steps": "optimizer steps at most",
    "eval_every": "steps between validation checks",
    "patience": "checks without improvement before stopping",
}
_COMPUTATION_FLAGS = {
    "solver": "PCA: eigh of the smaller Gram matrix, or a thin SVD of the data",
    "batch_size": "problems (trials) per vmapped chunk; lower it if memory runs out [all at once]",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stf_jax.align", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="extraction run directories (pairs mode); models are "
                                                             "matched by pair id across them")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS, metavar="METHOD",
                   help=f"methods and baselines to run, from {', '.join(ALL_METHODS)} [all but affine_tokens]")
    p.add_argument("--source", help="source model (with --target: only this direction) [all directed pairs]")
    p.add_argument("--target", help="target model")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--layer", type=int, default=-6, help="HF hidden-state index for every model, negatives count "
                                                             "from the end [-6]")
    where.add_argument("--layer-sweep", action="store_true",
                       help="Procrustes for every source layer x target layer (one batched computation); the pair "
                            "with the best centered cosine on the validation slice is then evaluated with every "
                            "method; needs a run with several layers")
    add_fields(p.add_mutually_exclusive_group(), EvalConfig, _SIZE_FLAGS)
    add_fields(p, EvalConfig, _PROTOCOL_FLAGS)
    p.add_argument("--pairs", help="dataset with the pair texts (needed to split) [the dataset the run names]")
    p.add_argument("--token-run", help="corpus run (token mode) of both models, for method affine_tokens")
    add_fields(p, EvalConfig, {"token_pairing": _TOKEN_PAIRING_HELP})
    a = p.add_argument_group("adapters (linear, lowrank, mlp)")
    add_fields(a, AdapterConfig, _ADAPTER_FLAGS, renamed={"lr": "learning_rate"})
    add_fields(a, AdapterConfig, {"batch_size": "rows per step, 0 = full batch"}, renamed={"adapter-batch": "batch_size"},
               prefix="adapter_")
    c = p.add_argument_group("computation")
    add_fields(c, EvalConfig, _COMPUTATION_FLAGS)
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    adapter = AdapterConfig(**fields_from_args(args, _ADAPTER_FLAGS),
                            **fields_from_args(args, ["batch_size"], prefix="adapter_"),
                            val_fraction=args.val_fraction, seed=args.seed)
    fields = fields_from_args(args, [*_SIZE_FLAGS, *_PROTOCOL_FLAGS, "token_pairing", *_COMPUTATION_FLAGS])
    fields.update(variance=None if args.k else args.variance,
                  scramble=tuple(m for m in args.scramble if m in args.methods))
    return EvalConfig(methods=tuple(args.methods), adapter=adapter, **fields)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        try:
            cfg = config_from_args(args)
        except ValueError as e:
            raise AlignArgumentError(f"bad arguments: {e}") from None
        results = evaluate(args.runs, cfg, layer=args.layer, sweep=args.layer_sweep, source=args.source,
                           target=args.target, pairs=args.pairs, token_run=args.token_run, out_dir=args.out, log=log)
    except (UserError, ValueError, KeyError, FileNotFoundError) as e:  # the alignment code's input checks
        return report_user_error(e)
    js, md = write_results(results, args.out)
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    cli_main(main)
