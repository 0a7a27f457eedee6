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
from .adapters import AdapterConfig
from .evaluate import ALL_METHODS, METHODS, EvalConfig, evaluate
from .inputs import AlignInputError
from .report import write_results


class AlignArgumentError(AlignInputError):
    """Arguments that do not make a valid configuration (reported as one line, exit 2)."""


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
    size = p.add_mutually_exclusive_group()
    size.add_argument("--k", type=int, help="PCA components, common to both models")
    size.add_argument("--variance", type=float, default=0.95,
                      help="choose k as the smallest count explaining this variance fraction of every model's "
                           "training vectors [0.95]")
    p.add_argument("--trials", type=int, default=5, help="trials; trial i splits with seed + i [5]")
    p.add_argument("--seed", type=int, default=0, help="first split seed [0]")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share per trait [0.2]")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training split held out to early-stop adapters and pick the sweep's layer "
                        "pair [0.1]")
    p.add_argument("--rotation-only", action="store_true", help="Procrustes with det(R) = +1 (no reflections)")
    p.add_argument("--ridge", type=float, default=0.1,
                   help="affine ridge, relative to the mean eigenvalue of the source Gram; 0 = least squares [0.1]")
    p.add_argument("--scramble", nargs="*", default=["procrustes", "affine"], metavar="METHOD",
                   help="methods also fitted on within-/cross-trait shuffled pairs (none: skip) [procrustes affine]")
    p.add_argument("--array", default="vectors", choices=["vectors", "diff"],
                   help="stored array to align: unit steering vectors or raw differences [vectors]")
    p.add_argument("--pairs", help="dataset with the pair texts (needed to split) [the dataset the run names]")
    p.add_argument("--token-run", help="corpus run (token mode) of both models, for method affine_tokens")
    p.add_argument("--token-pairing", default="text_mean", choices=["token", "text_mean"],
                   help="affine_tokens: pair token rows (same tokenizer) or per-text mean states [text_mean]")
    a = p.add_argument_group("adapters (linear, lowrank, mlp)")
    a.add_argument("--loss", default="mse", choices=["mse", "cosine", "normalized_mse"], help="training loss [mse]")
    a.add_argument("--rank", type=int, default=32, help="lowrank rank [32]")
    a.add_argument("--hidden", type=int, default=256, help="mlp hidden units [256]")
    a.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate [1e-3]")
    a.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay on matrices [1e-4]")
    a.add_argument("--orthogonality", type=float, default=0.0,
                   help="weight of the scale-free orthogonality penalty (linear, lowrank) [0]")
    a.add_argument("--max-steps", type=int, default=3000, help="optimizer steps at most [3000]")
    a.add_argument("--eval-every", type=int, default=50, help="steps between validation checks [50]")
    a.add_argument("--patience", type=int, default=8, help="checks without improvement before stopping [8]")
    a.add_argument("--adapter-batch", type=int, default=256, help="rows per step, 0 = full batch [256]")
    c = p.add_argument_group("computation")
    c.add_argument("--solver", default="gram", choices=["gram", "svd"],
                   help="PCA: eigh of the smaller Gram matrix, or a thin SVD of the data [gram]")
    c.add_argument("--batch-size", type=int,
                   help="problems (trials) per vmapped chunk; lower it if memory runs out [all at once]")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def check_numbers(args: argparse.Namespace) -> None:
    """Numeric flags: finite and in range, named in the error (NaN would otherwise run and print NaN tables)."""
    import math

    rules = {  # flag: (value, low, high, low inclusive)
        "--variance": (args.variance, 0.0, 1.0, False), "--test-fraction": (args.test_fraction, 0.0, 1.0, False),
        "--val-fraction": (args.val_fraction, 0.0, 1.0, False), "--ridge": (args.ridge, 0.0, math.inf, True),
        "--lr": (args.lr, 0.0, math.inf, False), "--weight-decay": (args.weight_decay, 0.0, math.inf, True),
        "--orthogonality": (args.orthogonality, 0.0, math.inf, True),
    }
    for flag, (value, low, high, inclusive) in rules.items():
        if value is None:
            continue
        ok = math.isfinite(value) and (value >= low if inclusive else value > low) and value <= high
        if flag in ("--test-fraction", "--val-fraction"):
            ok = ok and value < 1.0
        if not ok:
            where = f"{'[' if inclusive else '('}{low:g}, {high:g}{']' if flag == '--variance' else ')'}"
            raise AlignArgumentError(f"{flag} {value}: must be a finite number in {where}")
    for flag, value in (("--trials", args.trials), ("--k", args.k), ("--rank", args.rank), ("--hidden", args.hidden),
                        ("--max-steps", args.max_steps), ("--eval-every", args.eval_every),
                        ("--patience", args.patience), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise AlignArgumentError(f"{flag} {value}: must be >= 1")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    adapter = AdapterConfig(loss=args.loss, rank=args.rank, hidden=args.hidden, learning_rate=args.lr,
                            weight_decay=args.weight_decay, orthogonality=args.orthogonality,
                            max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience,
                            batch_size=args.adapter_batch, val_fraction=args.val_fraction, seed=args.seed)
    return EvalConfig(methods=tuple(args.methods), k=args.k, variance=None if args.k else args.variance,
                      trials=args.trials, seed=args.seed, test_fraction=args.test_fraction,
                      val_fraction=args.val_fraction, rotation_only=args.rotation_only, ridge=args.ridge,
                      scramble=tuple(m for m in args.scramble if m in args.methods), adapter=adapter,
                      array=args.array, solver=args.solver, batch_size=args.batch_size,
                      token_pairing=args.token_pairing)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        check_numbers(args)
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
