"""python -m stf_jax.judge: independent judges of text, the behavioural evaluation, OOD pairs, few-shot maps.

Examples:
  python -m stf_jax.judge score formality "Hey, can you send it?" "Could you kindly forward it?"
  python -m stf_jax.judge validate --pairs shipped          # does each judge rank positive over negative?
  python -m stf_jax.judge behaviour runs/shipped40 --layers gemma3-270m:12 smollm2-135m:22 --out runs/judge/behaviour
  python -m stf_jax.judge ood runs/shipped40 runs/ood --layers gemma3-270m:12 smollm2-135m:22 --out runs/judge/ood
  python -m stf_jax.judge fewshot runs/shipped40 --layers gemma3-270m:12 smollm2-135m:22 --out runs/judge/fewshot
  python -m stf_jax.extract --models smollm2-135m gemma3-270m --pairs ab --layers all --pooling letter --out runs/ab
  python -m stf_jax.judge ab runs/ab --layers smollm2-135m:20 gemma3-270m:9 --out runs/judge/ab   # CAA's A/B protocol
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.layers import model_layer_pairs
from ..errors import UserError, cli_main
from ..options import add_fields, fields_from_args


class JudgeArgumentError(UserError, ValueError):
    """A bad argument to python -m stf_jax.judge."""


def _steered_directions(args) -> tuple[dict | None, list[tuple[str, str]]]:
    """(--layers per direction, the directed model pairs of the run that --source / --target keep)."""
    models = _models(args.run_dir)
    directions = [(s, t) for s in models for t in models
                  if s != t and args.source in (None, s) and args.target in (None, t)]
    return model_layer_pairs(args.layers, models), directions


def _models(run_dir: str) -> list[str]:
    from ..extract.rundir import find_models

    return sorted(find_models([run_dir]))


# BehaviourConfig fields offered as flags of `behaviour` (the old --prompts still works).
_BEHAVIOUR_FLAGS = {
    "traits": "judged traits to steer",
    "methods": "transfer methods whose carried vectors are steered",
    "controls": "control vectors (zero_shot random shuffled; none with no value)",
    "alpha": "fixed strength (x mean |h|) instead of calibrating [calibrate]",
    "alpha_grid": "strengths the calibration chooses from",
    "calibration_guard_fraction": "share of traits whose native steering must pass the fluency guard",
    "n_prompts": "held-out neutral prompts",
    "max_new_tokens": "new tokens per generation",
    "sampled": "also sample (temperature 0.7, top-p 0.9, seeded) for native, affine and random",
    "batch_rows": "rows per generation call",
    "fluency_prompts": "score log-prob on the first N prompts only [all]",
    "seed": "seed of the splits, sampling and bootstrap",
}


def build_parser() -> argparse.ArgumentParser:
    from ..transfer.carry_settings import CARRY_FLAGS, CarrySettings
    from .ab import ABConfig
    from .behaviour import BehaviourConfig

    p = argparse.ArgumentParser(prog="python -m stf_jax.judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="judge texts for a trait (no model needed)")
    s.add_argument("trait", help="a judged trait (see `python -m stf_jax.judge list`)")
    s.add_argument("texts", nargs="*", help="texts to score")
    s.add_argument("--file", help="one text per line (or '-' for stdin)")

    sub.add_parser("list", help="judged traits: judge, unit, what it measures, blind spots")

    v = sub.add_parser("validate", help="per trait: how often the judge ranks a pair's positive over its negative")
    v.add_argument("--pairs", default="shipped", help="'shipped', or a JSONL/CSV/Parquet file or folder [shipped]")
    v.add_argument("--out", help="also write validate.json here")

    b = sub.add_parser("behaviour", help="steer both models, judge the generations (native, transferred, controls)")
    b.add_argument("run_dir", help="an extraction run with >= 2 models")
    b.add_argument("--layers", nargs="+", help="MODEL:LAYER per model (HF hidden-state index) [-6 in both]")
    add_fields(b, BehaviourConfig, _BEHAVIOUR_FLAGS, renamed={"prompts": "n_prompts"})
    add_fields(b.add_argument_group("s2l and many-to-one"), CarrySettings, CARRY_FLAGS)
    b.add_argument("--no-logprob", action="store_true", help="fluency guard from repetition only (faster)")
    b.add_argument("--source", help="only this source model"), b.add_argument("--target", help="only this target")
    b.add_argument("--out", required=True)

    o = sub.add_parser("ood", help="maps fitted on the shipped run, scored on an OOD run beside in-distribution")
    o.add_argument("shipped_run"), o.add_argument("ood_run")
    o.add_argument("--layers", nargs="+", required=True, help="MODEL:LAYER per model")
    o.add_argument("--methods", nargs="+", default=["procrustes", "affine", "linear"])
    o.add_argument("--out", required=True)

    f = sub.add_parser("fewshot", help="map quality vs number of training traits and pairs per trait (the Preference-Vector idea)")
    f.add_argument("run_dir")
    f.add_argument("--layers", nargs="+", required=True, help="MODEL:LAYER per model")
    f.add_argument("--methods", nargs="+", default=["affine", "procrustes"])
    f.add_argument("--repeats", type=int, default=5)
    f.add_argument("--steer-traits", nargs="*", default=[], help="also the propensity effect ratio for these traits")
    f.add_argument("--out", required=True)

    a = sub.add_parser("ab", help="the A/B protocol (Contrastive Activation Addition): matching-letter probability "
                                  "on held-out A/B items across strengths; native, transferred, controls")
    a.add_argument("run_dir", help="an extraction run of A/B items with >= 2 models (--pairs ab or a file of A/B "
                                   "items; --pooling letter reads CAA's answer-letter position)")
    a.add_argument("--layers", nargs="+", help="MODEL:LAYER per model (HF hidden-state index) [-6 in both]")
    add_fields(a, ABConfig, _AB_FLAGS)
    add_fields(a.add_argument_group("s2l and many-to-one"), CarrySettings, CARRY_FLAGS)
    a.add_argument("--source", help="only this source model"), a.add_argument("--target", help="only this target")
    a.add_argument("--out", required=True)

    mg = sub.add_parser("merge", help="merge behaviour_results.json of runs over different directions into one")
    mg.add_argument("inputs", nargs="+", help="behaviour output directories (or their behaviour_results.json)")
    mg.add_argument("--out", required=True)

    g = sub.add_parser("figures", help="redraw the figures of behaviour/ood/fewshot outputs under a directory")
    g.add_argument("out_dir")
    return p


def _write(obj: dict, out: str, name: str, md: str) -> None:
    from .behaviour import _jsonable

    from ..core.atomic import atomic_write_text

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / f"{name}.json", json.dumps(_jsonable(obj), indent=1))
    atomic_write_text(d / f"{name}.md", md)
    print(f"wrote {d / f'{name}.json'} and {d / f'{name}.md'}")


def _list(args) -> int:
    """Print each judged trait's judge, unit, what it measures and its blind spots."""
    from . import JUDGES

    for t, j in JUDGES.items():
        print(f"{t}: {j.name} ({j.unit}) — {j.measures}. Blind spots: {j.blind_spots}")
    return 0


def _score(args) -> int:
    """Score texts from the arguments and --file with one trait's judge, one line per text."""
    from . import score

    texts = list(args.texts)
    if args.file:
        try:
            src = sys.stdin.read() if args.file == "-" else Path(args.file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JudgeArgumentError(f"{args.file}: not UTF-8 text (byte {exc.start}); give a text file, one text "
                                     "per line") from None
        texts += [line for line in src.splitlines() if line.strip()]
    if not texts:
        raise JudgeArgumentError("give texts to score (arguments or --file)")
    for t, v in zip(texts, score(args.trait, texts)):
        print(f"{v:.4g}\t{t}")
    return 0


def _validate(args) -> int:
    """Check each judge ranks pairs' positives over negatives; print the table, optionally write it."""
    from .validate import markdown, validate_judges

    res = validate_judges(args.pairs)
    print(markdown(res), end="")
    if args.out:
        _write(res, args.out, "validate", markdown(res))
    return 0


def _carry(args):
    from ..transfer.carry_settings import CARRY_FLAGS, CarrySettings

    return CarrySettings(**fields_from_args(args, CARRY_FLAGS))


def behaviour_config(args):
    """The BehaviourConfig the `behaviour` flags describe (a bad value is a one-line error)."""
    from .behaviour import BehaviourConfig

    try:
        return BehaviourConfig(**fields_from_args(args, _BEHAVIOUR_FLAGS), carry=_carry(args))
    except ValueError as e:
        raise JudgeArgumentError(f"behaviour: {e}") from None


def _behaviour(args) -> int:
    """Steer each chosen direction and judge the generations (the behavioural evaluation)."""
    from .behaviour import run_behaviour, write_results

    cfg = behaviour_config(args)
    layers, directions = _steered_directions(args)
    from ..locks import DirLock

    with DirLock(args.out, "judge behaviour"):  # one writer; a read-only --out fails here, before any work
        res = run_behaviour(args.run_dir, cfg, layers=layers, directions=directions, out_dir=args.out,
                            with_logprob=not args.no_logprob)
        for path in write_results(res, args.out):
            print(f"wrote {path}")
    return 0


_AB_FLAGS = {"strengths": "strengths: a x typical |h| of the steered layer (0 is added)",
             "behaviours": "behaviours to score [every one in the run]",
             "methods": "transfer methods carried (leave-one-behaviour-out)",
             "controls": "controls: random, shuffled, zero_shot", "bootstrap": "bootstrap resamples over items",
             "seed": "split and bootstrap seed"}


def _ab(args) -> int:
    """The A/B protocol over the chosen directions of a run of A/B items."""
    from ..locks import DirLock
    from .ab import ABConfig, evaluate_ab, markdown, write_results

    cfg = ABConfig(**fields_from_args(args, _AB_FLAGS), carry=_carry(args))
    layers, directions = _steered_directions(args)
    with DirLock(args.out, "judge ab"):
        res = evaluate_ab(args.run_dir, cfg, layers=layers, directions=directions,
                          log=lambda *m: print(*m, file=sys.stderr, flush=True))
        for path in write_results(res, args.out):
            print(f"wrote {path}")
    print(markdown(res))
    return 0


def _ood(args) -> int:
    """Score maps fitted on the shipped run on the OOD run's pairs, beside in-distribution."""
    from .ood import markdown, ood_evaluation

    layers = model_layer_pairs(args.layers, _models(args.shipped_run))
    res = ood_evaluation(args.shipped_run, args.ood_run, layers, tuple(args.methods))
    _write(res, args.out, "ood_results", markdown(res))
    return 0


def _fewshot(args) -> int:
    """Map quality against the number of training traits and pairs per trait, with its figure."""
    from .fewshot import markdown, run_fewshot

    layers = model_layer_pairs(args.layers, _models(args.run_dir))
    settings = [(1, 2), (1, None), (2, None), (4, None), (25, 2), (25, None)]
    res = run_fewshot(args.run_dir, layers, tuple(args.methods), repeats=args.repeats,
                      steer_traits=tuple(args.steer_traits), steer_settings=settings if args.steer_traits else ())
    _write(res, args.out, "fewshot_results", markdown(res))
    from .figures import fewshot_figure

    print(f"wrote {fewshot_figure(res, Path(args.out) / 'fewshot.png')}")
    return 0


def _merge(args) -> int:
    """Join behaviour results of runs over different directions (the first run's entry wins a repeat)."""
    from .behaviour import write_results

    merged = None
    for src in args.inputs:
        path = Path(src) / "behaviour_results.json" if Path(src).is_dir() else Path(src)
        if not path.is_file():
            raise JudgeArgumentError(f"{path}: no behaviour_results.json")
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
            res["directions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise JudgeArgumentError(f"{path}: not a behaviour_results.json ({type(exc).__name__}: {exc})") from None
        if merged is None:
            merged = res
        else:
            have = {(d["source"], d["target"]) for d in merged["directions"]}
            merged["directions"] += [d for d in res["directions"] if (d["source"], d["target"]) not in have]
    for path in write_results(merged, args.out):
        print(f"wrote {path}")
    return 0


def _figures(args) -> int:
    """Redraw the figures of behaviour / OOD / few-shot outputs under a directory."""
    from .figures import redraw

    for path in redraw(args.out_dir):
        print(f"wrote {path}")
    return 0


COMMANDS = {"list": _list, "score": _score, "validate": _validate, "behaviour": _behaviour, "ood": _ood,
            "fewshot": _fewshot, "merge": _merge, "figures": _figures, "ab": _ab}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS.get(args.command)
    return command(args) if command else 2


if __name__ == "__main__":
    cli_main(main)
