"""python -m stf_jax.report RUN_DIR [--out DIR]: report.md, figures/*.png and a self-contained report.html.

RUN_DIR holds align/<name>/results.json (python -m stf_jax.align), steer/steer_results.json
(python -m stf_jax.steer eval) and optionally experiment.json (python -m stf_jax.experiment writes all three).
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m stf_jax.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="experiment run directory")
    p.add_argument("--out", metavar="DIR", help="output directory [RUN_DIR]")
    p.add_argument("--dpi", type=int, default=110, help="figure resolution [110]")
    args = p.parse_args(argv)

    from ..errors import UserError, report_user_error
    from .render import write_report

    try:
        md, html = write_report(args.run_dir, args.out, dpi=args.dpi)
    except UserError as e:  # ReportInputError and every other expected error: one line, exit 2
        return report_user_error(e)
    print(md)
    print(html)
    return 0


if __name__ == "__main__":
    from ..errors import cli_main

    cli_main(main)
