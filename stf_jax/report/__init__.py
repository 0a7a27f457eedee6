"""Experiment report: `python -m stf_jax.report RUN_DIR` writes report.md (+ figures/*.png) and one
self-contained report.html (figures embedded as base64 PNG, inline CSS, no scripts or external resources).

    md_path, html_path = stf_jax.report("runs/demo")

`stf_jax.report` is this package and, called, the function `report` below. RUN_DIR layout:
experiment.json (optional), align/<name>/results.json (`python -m stf_jax.align`),
steer/steer_results.json (`python -m stf_jax.steer eval`); `python -m stf_jax.experiment` writes all of it.
Names load lazily (matplotlib only when a report is built).
"""

from __future__ import annotations

from pathlib import Path

_LAZY = {
    "ReportInputError": "load", "Run": "load", "ExperimentResults": "load", "load_run": "load", "variance_curves": "load",
    "build": "render", "to_html": "render", "to_markdown": "render", "write_report": "render",
}
__all__ = [*_LAZY, "report"]


def report(run_dir: str | Path, out_dir: str | Path | None = None, dpi: int = 110) -> tuple[Path, Path]:
    """Write report.md (figures as PNGs under figures/) and a self-contained report.html for an experiment
    directory into out_dir [run_dir]; returns (md_path, html_path). ReportInputError when it holds no results."""
    from .render import write_report

    return write_report(run_dir, out_dir, dpi)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)


from .. import _callable_package  # noqa: E402

_callable_package(__name__, report)
