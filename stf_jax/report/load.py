"""Find and read what an experiment run directory holds: experiment.json, align/*/results.json,
steer/steer_results.json; and the PCA variance curves (from results.json or, failing that, the
extraction run the alignment read)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ..errors import UserError

EXPECTED = """\
expected at least one of
  RUN_DIR/align/<name>/results.json   written by `python -m stf_jax.align EXTRACT_RUN --out RUN_DIR/align/<name>`
  RUN_DIR/steer/steer_results.json    written by `python -m stf_jax.steer eval ... --out RUN_DIR/steer`
  RUN_DIR/judge/*/{behaviour,ood,fewshot,ab}_results.json   written by `python -m stf_jax.judge ... --out RUN_DIR/judge/<name>`
  RUN_DIR/kinds/kinds.json            written by `python -m stf_jax.transfer kinds ... --out RUN_DIR/kinds`
  RUN_DIR/sae/<name>/training.json, RUN_DIR/sae/**/features.json   written by `python -m stf_jax.sae train|features`
(optionally RUN_DIR/experiment.json); `python -m stf_jax.experiment` writes the whole layout in one go.
RUN_DIR may also be a single alignment output directory (holding results.json)."""


class ReportInputError(UserError, ValueError):
    """RUN_DIR is missing or holds nothing to report."""


@dataclass
class ExperimentResults:
    """The parsed results of an experiment directory (what `stf_jax.experiment` wrote: stage outputs)."""

    root: Path
    experiment: dict[str, Any] | None = None
    align: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> results.json
    align_paths: dict[str, Path] = field(default_factory=dict)
    steer: dict[str, Any] | None = None
    steer_path: Path | None = None
    judge: dict[str, dict[str, Any]] = field(default_factory=dict)  # behaviour | ood | fewshot | ab -> results
    judge_paths: dict[str, Path] = field(default_factory=dict)
    kinds: dict[str, Any] | None = None  # transfer by vector kind (kinds.json)
    sae_quality: list[dict[str, Any]] = field(default_factory=list)  # trained SAEs (sae/*/training.json)
    sae_features: list[dict[str, Any]] = field(default_factory=list)  # feature views (sae/**/features.json)

    @property
    def name(self) -> str:
        if self.experiment and self.experiment.get("name"):
            return str(self.experiment["name"])
        return self.root.resolve().name


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())  # Python's json reads NaN / Infinity as floats
    except (OSError, json.JSONDecodeError) as e:
        raise ReportInputError(f"{path}: cannot read JSON ({e})") from e


def load_run(run_dir: str | Path) -> ExperimentResults:
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportInputError(f"{root}: no such directory\n{EXPECTED}")
    run = ExperimentResults(root)
    if (root / "experiment.json").is_file():
        run.experiment = _read(root / "experiment.json")
    found = sorted((root / "align").glob("*/results.json")) if (root / "align").is_dir() else []
    if (root / "results.json").is_file():  # RUN_DIR is itself an alignment output directory
        found.insert(0, root / "results.json")
    for path in found:
        data = _read(path)
        if not isinstance(data, dict) or "directions" not in data:
            raise ReportInputError(f"{path}: not an alignment results.json (no 'directions')")
        name = path.parent.name
        run.align[name] = data
        run.align_paths[name] = path
    for cand in (root / "steer" / "steer_results.json", root / "steer_results.json"):
        if cand.is_file():
            data = _read(cand)
            if not isinstance(data, dict) or not ("models" in data or "directions" in data):
                raise ReportInputError(f"{cand}: not a steer_results.json (no 'models' or 'directions')")
            run.steer, run.steer_path = data, cand
            break
    for kind, key in (("behaviour", "directions"), ("ood", "directions"), ("fewshot", "directions"),
                      ("ab", "directions")):
        hits = sorted((root / "judge").glob(f"**/{kind}_results.json")) if (root / "judge").is_dir() else []
        hits += [root / f"{kind}_results.json"] if (root / f"{kind}_results.json").is_file() else []
        if hits:
            data = _read(hits[0])
            if not isinstance(data, dict) or key not in data:
                raise ReportInputError(f"{hits[0]}: not a {kind}_results.json (no {key!r})")
            run.judge[kind], run.judge_paths[kind] = data, hits[0]
    for cand in (root / "kinds" / "kinds.json", root / "kinds.json"):
        if cand.is_file():
            data = _read(cand)
            if not isinstance(data, dict) or "directions" not in data:
                raise ReportInputError(f"{cand}: not a kinds.json (no 'directions')")
            run.kinds = data
            break
    if (root / "sae").is_dir():
        run.sae_quality = [_without_history(_read(p)) for p in sorted((root / "sae").glob("*/training.json"))]
        run.sae_features = [_read(p) for p in sorted((root / "sae").glob("**/features.json"))]
        for what, rows in (("training.json", run.sae_quality), ("features.json", run.sae_features)):
            if any(not isinstance(r, dict) or ("fvu" not in r and "features" not in r) for r in rows):
                raise ReportInputError(f"{root / 'sae'}: a {what} that is not one (written by python -m stf_jax.sae)")
    if not run.align and run.steer is None and not run.judge and run.kinds is None and not (
            run.sae_quality or run.sae_features):
        raise ReportInputError(f"{root}: no results to report\n{EXPECTED}")
    return run


# ----------------------------------------------------------------------------------------------------------------
# PCA variance curves


def _finite_list(xs) -> list[float] | None:
    try:
        out = [float(x) for x in xs]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(x) for x in out) else None


def _resolve_run_dir(run: str, results_path: Path, report_root: Path) -> Path | None:
    p = Path(run)
    cands = [p] if p.is_absolute() else [Path.cwd() / p, report_root / p, results_path.parent / p]
    if not p.is_absolute():  # results.json written from the repository root: runs/x relative to an ancestor
        cands += [anc / p for anc in results_path.resolve().parents]
    return next((c for c in cands if (c / "manifest.json").is_file() or c.is_dir()), None)


def curve_from_run(run_dir: Path, model: str, layer: int, max_components: int | None = None) -> list[float] | None:
    """Cumulative explained-variance fraction per PCA component of a model's `vectors` at one layer of an
    extraction run (all non-zero rows, global mean-centred, like stf_jax.align.pca). None if unavailable.

    Read through `extract.store.load_layer` like every stage: the model is looked up by its manifest name or
    slug (models given as paths have slugged folders), with the format-version and checksum checks."""
    from ..extract.store import load_layer

    try:
        arrays = load_layer(run_dir, model, int(layer))
    except UserError:  # not a finished run, model or layer not there, damaged file: just no curve
        return None
    if "vectors" not in arrays:
        return None
    x = np.asarray(arrays["vectors"], np.float64)
    x = x[np.abs(x).sum(1) > 0]
    if len(x) < 2:
        return None
    xc = x - x.mean(0)
    small = xc @ xc.T if len(xc) < xc.shape[1] else xc.T @ xc
    ev = np.clip(np.linalg.eigvalsh(small)[::-1], 0, None)
    total = ev.sum()
    if total <= 0:
        return None
    cum = np.cumsum(ev) / total
    if max_components:
        cum = cum[:max_components]
    return [float(v) for v in cum]


def variance_curves(run: ExperimentResults) -> dict[str, dict[str, dict[str, Any]]]:
    """{align name: {"<model> @ layer <l>": {"curve": [...], "k": k, "source": "results.json" | "run files"}}}.

    Prefers a `variance_curve` field of each results.json direction ({model: [cumulative fraction, ...]}),
    falls back to an SVD of the extraction run's vectors named in results.json `inputs`."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, res in run.align.items():
        curves: dict[str, dict[str, Any]] = {}
        models = (res.get("inputs") or {}).get("models") or {}
        for d in res.get("directions", []):
            k = d.get("k")
            stored = d.get("variance_curve") or {}
            for model, layer in ((d.get("source"), d.get("layer_source")), (d.get("target"), d.get("layer_target"))):
                label = f"{model} @ layer {layer}"
                if model is None or label in curves:
                    continue
                curve = _finite_list(stored.get(model, []))
                src = "results.json"
                if curve is None and model in models and models[model].get("run") and layer is not None:
                    rd = _resolve_run_dir(models[model]["run"], run.align_paths[name], run.root)
                    curve = curve_from_run(rd, model, layer, max_components=max(2 * int(k or 0), 64)) if rd else None
                    src = "run files"
                if curve:
                    curves[label] = {"curve": curve, "k": k, "source": src,
                                     "explained_at_k": (d.get("variance_explained") or {}).get(model, {}).get("mean")}
        if curves:
            out[name] = curves
    return out


Run = ExperimentResults  # the earlier name; "run" now means an extraction run directory only


def _without_history(d: Any) -> Any:
    return {k: v for k, v in d.items() if k != "history"} if isinstance(d, dict) else d
