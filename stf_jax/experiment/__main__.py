"""python -m stf_jax.experiment CONFIG: the whole job from one YAML (extract → align → steer → export → report).

  python -m stf_jax.experiment configs/experiments/demo.yaml            # both shipped models, ~10 min on 2 CPU cores
  python -m stf_jax.experiment configs/experiments/demo.yaml --force steer
  python -m stf_jax.experiment configs/experiments/paper.yaml --out /data/runs/paper

Stages whose settings and inputs are unchanged are skipped (their stage.json records a hash), so a
rerun after an interruption resumes; --force STAGE redoes one, --only STAGE runs only some.
"""

from __future__ import annotations

import argparse

from ..errors import UserError, cli_main, report_user_error
from . import STAGES, load_experiment, run_experiment


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m stf_jax.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="experiment YAML (configs/experiments/*.yaml)")
    p.add_argument("--out", help="run directory [the config's 'out', else runs/<name>]")
    p.add_argument("--force", nargs="+", default=[], metavar="STAGE",
                   help=f"redo these stages even if up to date ({', '.join(STAGES)}; align/<name> for one analysis)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (their inputs must exist)")
    args = p.parse_args(argv)
    try:
        exp = load_experiment(args.config, args.out)
        run_experiment(exp, force=set(args.force), only=set(args.only) if args.only else None)
    except (UserError, FileNotFoundError) as exc:  # expected errors of every stage: one line, exit 2
        return report_user_error(exc)
    return 0


if __name__ == "__main__":
    cli_main(main)
