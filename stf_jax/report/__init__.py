"""Experiment report: `python -m stf_jax.report RUN_DIR` writes report.md (+ figures/*.png) and one
self-contained report.html (figures embedded as base64 PNG, inline CSS, no scripts or external resources).

RUN_DIR layout: experiment.json (optional), align/<name>/results.json (`python -m stf_jax.align`),
steer/steer_results.json (`python -m stf_jax.steer eval`); `python -m stf_jax.run` writes all of it.
"""

from .load import ReportInputError, Run, load_run, variance_curves
from .render import build, to_html, to_markdown, write_report

__all__ = ["ReportInputError", "Run", "build", "load_run", "to_html", "to_markdown", "variance_curves",
           "write_report"]
