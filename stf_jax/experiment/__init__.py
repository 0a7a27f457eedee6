"""The main job: contrast pairs → extraction → alignment (+ layer sweep) → causal steering → export → report.

    python -m stf_jax.experiment configs/experiments/demo.yaml

One YAML drives every stage (see configs/experiments/). Each stage writes `stage.json` with a hash of
its settings and of the stages it reads; a rerun skips a stage whose hash matches (`--force STAGE` redoes
it), and a stage that was interrupted resumes (extraction at chunk level). Everything here is a call into
the library: `stf_jax.extract`, `stf_jax.align`, `stf_jax.steer`, `stf_jax.report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.yamlfile import ConfigFileError, read_config
from ..errors import UserError
from ..safe_paths import inside, is_safe_name, safe_name

STAGES = ("extract", "corpus", "align", "steer", "export", "report")


class ExperimentError(UserError, ValueError):
    """A bad experiment config: says which key, and what is allowed."""


class ExperimentNotFoundError(UserError, FileNotFoundError):
    """The experiment config file does not exist."""


@dataclasses.dataclass
class Experiment:
    name: str
    out: Path
    models: list[str]
    pairs: str = "shipped"
    extract: dict[str, Any] = dataclasses.field(default_factory=dict)
    corpus: dict[str, Any] | None = None
    align: dict[str, Any] = dataclasses.field(default_factory=dict)
    steer: dict[str, Any] | None = dataclasses.field(default_factory=dict)
    export: dict[str, Any] | None = dataclasses.field(default_factory=dict)
    report: bool = True
    path: Path | None = None


_TOP = {f.name for f in dataclasses.fields(Experiment)} - {"path"}


def load_experiment(path: str | Path, out: str | None = None) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise ExperimentNotFoundError(f"{path}: experiment config not found (shipped ones: configs/experiments/*.yaml)")
    try:
        raw = read_config(path)
    except ConfigFileError as e:
        raise ExperimentError(str(e)) from None
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ExperimentError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(_TOP)}")
    for key in ("name", "models"):
        if key not in raw:
            raise ExperimentError(f"{path}: missing '{key}'")
    if not isinstance(raw["models"], list) or len(raw["models"]) < 2:
        raise ExperimentError(f"{path}: 'models' must list at least two models (transfer needs a pair)")
    if not all(isinstance(m, str) and m.strip() for m in raw["models"]):
        raise ExperimentError(f"{path}: 'models' must be a list of model names or paths (strings)")
    if not isinstance(raw["name"], str) or not raw["name"].strip():
        raise ExperimentError(f"{path}: 'name' must be a non-empty string")
    for section in ("extract", "corpus", "align", "steer", "export"):
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise ExperimentError(f"{path}: '{section}' must be a mapping of settings")
    raw["out"] = Path(out or raw.get("out") or f"runs/{safe_name(raw['name'], 'experiment name')}")
    return Experiment(**raw, path=path)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Stages:
    """Stage bookkeeping: a stage is done when its stage.json has the same hash (settings + inputs)."""

    def __init__(self, root: Path, force: set[str], log):
        self.root, self.force, self.log = root, force, log
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.skipped: list[str] = []

    def run(self, name: str, settings: dict, upstream: list[str], outputs: list[Path], fn: Callable[[], Any],
            enabled: bool = True):
        """Run fn unless up to date; a stage left out (enabled=False, `--only`) still records its hash, so
        the stages after it see the same inputs as in a full run."""
        h = _hash({"settings": settings, "upstream": [self.hashes[u] for u in upstream]})
        self.hashes[name] = h
        if not enabled:
            return
        marker = self.root / name / "stage.json" if name != "report" else self.root / "report.stage.json"
        if name not in self.force and marker.exists() and all(p.exists() for p in outputs):
            if _read_marker(marker).get("hash") == h:
                self.log(f"[{name}] up to date (stage hash {h}); skipped")
                self.skipped.append(name)
                return
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        fn()
        self.seconds[name] = time.perf_counter() - t0
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"hash": h, "settings": settings, "upstream": upstream,
                                   "seconds": self.seconds[name],
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, default=str)
        self.log(f"[{name}] done in {self.seconds[name]:.0f}s")


def _read_marker(path: Path) -> dict:
    """A stage.json; a damaged one (killed mid-write by an older version, edited) just means "redo the stage"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


from ..core.atomic import atomic_write_json  # noqa: E402,F401 (used below and by stages)


# ---------------------------------------------------------------- stages


def _extract(exp: Experiment, run_dir: Path):
    from ..extract.inputs import read_pairs
    from ..extract.driver import ExtractOptions, extract_pairs

    cfg = dict(exp.extract)
    select = {k: cfg.pop(k) for k in ("traits", "per_trait", "split") if k in cfg}
    fields = {f.name for f in dataclasses.fields(ExtractOptions)}
    bad = sorted(set(cfg) - fields)
    if bad:
        raise ExperimentError(f"extract: unknown key(s) {bad}; allowed: {sorted(fields | {'traits', 'per_trait', 'split'})}")
    if "layers" in cfg:
        cfg["layers"] = str(cfg["layers"])
    pairs, name = read_pairs(exp.pairs, select.get("traits"), select.get("per_trait"), select.get("split"),
                             cfg.get("seed", 0))
    extract_pairs(exp.models, pairs, run_dir, ExtractOptions(**cfg), dataset_name=name)


def _corpus(exp: Experiment, out: Path):
    """Token-mode extraction (hidden states of every kept token) for affine maps fitted on hidden states."""
    from ..extract.inputs import read_corpus
    from ..extract.driver import ExtractOptions, extract_corpus

    cfg = dict(exp.corpus or {})
    source = cfg.pop("texts", "shipped-pairs")
    if source == "shipped-pairs":  # every positive and negative text of the experiment's pairs
        from ..extract.inputs import read_pairs

        pairs, _ = read_pairs(exp.pairs, exp.extract.get("traits"), exp.extract.get("per_trait"))
        texts = [t for p in pairs for t in (p.positive, p.negative)]
    else:
        texts, _ = read_corpus(source)
    if "layers" in cfg:
        cfg["layers"] = str(cfg["layers"])
    extract_corpus(exp.models, texts, out, ExtractOptions(**cfg), corpus_name=str(source))


def _dataclass_from(section: str, cls, settings: dict, tuples: tuple[str, ...], extra: set[str]):
    """cls(**settings) with lists turned into tuples and nested mappings into their configs (`adapter`: an
    AdapterConfig, `carry`: s2l's SAE and many-to-one's stack); unknown keys name the section and the allowed
    keys, and a value outside its option's range names its YAML key."""
    from ..align import adapters as adapters_lib
    from ..transfer.carry_settings import CarrySettings
    from ..options import OptionError

    if not isinstance(settings, dict):
        raise ExperimentError(f"{section}: expected a mapping of settings, got {type(settings).__name__}")
    s = {k: v for k, v in settings.items() if k not in extra}
    for key, sub in (("adapter", adapters_lib.AdapterConfig), ("carry", CarrySettings)):
        if key not in s:
            continue
        if not isinstance(s[key], dict):
            raise ExperimentError(f"{section}.{key}: expected a mapping of {key} settings")
        bad = sorted(set(s[key]) - {f.name for f in dataclasses.fields(sub)})
        if bad:
            raise ExperimentError(f"{section}.{key}: unknown key(s) {bad}")
        try:
            s[key] = sub(**s[key])
        except OptionError as exc:
            raise _option_error(f"{section}.{key}", exc) from None
    for key in tuples:
        if s.get(key) is not None:
            if not isinstance(s[key], (list, tuple)):
                raise ExperimentError(f"{section}.{key}: expected a list, got {s[key]!r:.60}")
            s[key] = tuple(s[key])
    fields = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(s) - fields)
    if bad:
        raise ExperimentError(f"{section}: unknown key(s) {bad}; allowed: {sorted(fields | extra)}")
    try:
        return cls(**s)
    except OptionError as exc:
        raise _option_error(section, exc) from None


def _align_config(settings: dict):
    from ..align.evaluate import EvalConfig

    return _dataclass_from("align", EvalConfig, settings, ("methods", "scramble"), {"analyses"})


def _align(run_dir: Path, out: Path, cfg, analysis: dict, log):
    from ..align.evaluate import evaluate
    from ..align.report import write_results

    token_run = run_dir.parent / "corpus" if analysis.get("token_run") else None
    if analysis.get("methods"):
        cfg = dataclasses.replace(cfg, methods=tuple(analysis["methods"]))
    results = evaluate([run_dir], cfg, layer=analysis.get("layer", -6), sweep=bool(analysis.get("sweep")),
                       token_run=token_run, out_dir=out, log=log)
    write_results(results, out)


def _steer_config(settings: dict):
    from ..steer.evaluate import SteerConfig

    return _dataclass_from("steer", SteerConfig, settings, ("alphas", "methods", "controls", "traits"), {"layers"})


def _steer(run_dir: Path, out: Path, cfg, layers_spec, sweep_json: Path | None, log):
    from ..extract.rundir import find_models
    from ..steer.evaluate import evaluate_steering, layers_from_sweep
    from ..steer.results import write_steer_results

    refs = find_models([run_dir])
    layers, layer = None, -6
    if layers_spec == "sweep":
        if sweep_json is None or not sweep_json.exists():
            raise ExperimentError("steer.layers = sweep needs an align analysis with sweep: true")
        layers = layers_from_sweep(sweep_json, {m: r.n_layers for m, r in refs.items()})
    else:
        layer = int(layers_spec)
    results = evaluate_steering(run_dir, cfg, layers=layers, layer=layer, out_dir=out, log=log)
    results["config"]["layers_from"] = str(sweep_json) if layers else f"layer {layer}"
    write_steer_results(results, out)


def _export(run_dir: Path, steer_dir: Path, out: Path, settings: dict, log) -> list[Path]:
    """Trait vectors (native and transferred) as llama.cpp control-vector GGUF / safetensors files.

    The stage owns its directory: it is written beside `out` and swapped in whole, so a changed
    configuration never leaves an earlier configuration's vectors next to the new ones."""
    import shutil

    staging, old = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    written = _write_exports(run_dir, steer_dir, staging, settings)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    log(f"[export] wrote {len(written)} control vector(s) under {out}")
    return [out / p.relative_to(staging) for p in written]


def _write_exports(run_dir: Path, steer_dir: Path, out: Path, settings: dict) -> list[Path]:
    from ..core.vector import stored_strength
    from ..core.vectorfile import write_vector_file
    from ..extract.store import model_hint, model_slug, read_json_file, read_manifest

    manifest = read_manifest(run_dir)
    model_type = {m["name"]: model_hint(m) for m in manifest["models"]}
    results = read_json_file(steer_dir / "steer_results.json", "steer_results.json")
    fmt = settings.get("format", "gguf")
    if fmt not in ("gguf", "safetensors"):
        raise ExperimentError(f"export.format must be gguf or safetensors, not {fmt!r}")
    strength = _export_strength(settings)
    written = []
    for d in results["directions"]:
        arrays = np.load(inside(steer_dir, d["vectors"]))
        # stored length: strength x the target layer's typical |h| (measured by the steer stage), so llama.cpp's
        # --control-vector-scaled FILE:1 and repeng's set_control(v, 1) steer at that strength; or 1 ("unit")
        fraction = strength if d.get("mean_norm") else None  # results written without typical |h|: unit length
        length = 1.0 if fraction is None else fraction * float(d["mean_norm"])
        how = stored_strength(fraction, {d["layer_target"]: d["mean_norm"]} if fraction else None)
        conds = settings.get("conditions") or list(d["conditions"])
        traits = settings.get("traits") or results["traits"]
        for c in conds:
            if c not in d["conditions"]:
                raise ExperimentError(f"export: condition {c!r} was not steered; have {list(d['conditions'])}")
            if c in ("random", "shuffled"):
                continue  # controls are not vectors anyone should load
            for t in traits:
                key = f"{c}/{t}"
                if key not in arrays:
                    raise ExperimentError(f"export: no vector for trait {t!r}")
                method = "native" if c == "native" else c
                source = d["target"] if c == "native" else d["source"]
                # names from the data (traits, models, conditions) are slugged (safe_paths.safe_name) and the path
                # is checked to stay inside the export directory
                origin = f"__from_{model_slug(d['source'])}" if c != "native" else ""
                path = inside(out, Path(model_slug(d["target"])) / f"{safe_name(t, 'trait')}__{safe_name(c, 'condition')}"
                                                                    f"{origin}.{fmt}")
                v = np.asarray(arrays[key], np.float32)
                write_vector_file(path, {d["layer_target"]: (v / np.linalg.norm(v) * length).astype(np.float32)},
                                  model_hint=model_type[d["target"]],
                                  metadata={"source_model": source, "target_model": d["target"],
                                            "transfer_method": method, "trait": t, "operation": "additive",
                                            "source_layer": str(d["layer_source"]) if c != "native" else
                                            str(d["layer_target"]), **how})
                written.append(path)
    return written



def check_experiment(exp: Experiment) -> None:
    """Build every stage's settings up front, so a typo fails in a second, not after extraction. A value
    outside its option's declared range (`options.option`) is named by its YAML key: extract.batch_size."""
    _check_extract(exp)
    _check_align_and_steer(exp)
    if exp.export is not None:
        bad = sorted(set(exp.export) - {"traits", "conditions", "format", "strength"})
        if bad:
            raise ExperimentError(f"export: unknown key(s) {bad}; allowed: traits, conditions, format, strength")
        _export_strength(exp.export)


def _export_strength(settings: dict) -> float | None:
    """export.strength: the stored length as a fraction of the target layer's typical |h| (a number in (0, 10];
    default `SteeringVector.DEFAULT_STRENGTH`, 0.15), or "unit" (length 1). None means unit."""
    from ..core.vector import DEFAULT_STRENGTH

    value = settings.get("strength", DEFAULT_STRENGTH)
    if value == "unit":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
        raise ExperimentError(f"export.strength must be a number in (0, 10] (a fraction of the layer's typical |h|) or "
                              f"'unit', got {value!r}")
    return float(value)


def _option_error(section: str, exc: Exception) -> ExperimentError:
    """An option's range error (`name= must be ...`) as the YAML spells the key: section.name must be ..."""
    text = str(exc)
    name, sep, rest = text.partition("= ")
    return ExperimentError(f"{section}.{name} {rest}" if sep and name.isidentifier() else f"{section}: {text}")


def _check_extract(exp: Experiment) -> None:
    from ..extract.driver import ExtractOptions

    selection = {"traits", "per_trait", "split"}
    for section, extra in (("extract", selection), ("corpus", selection | {"texts"})):
        cfg = getattr(exp, section) or {}
        _dataclass_from(section, ExtractOptions, cfg, (), extra)
        per_trait = cfg.get("per_trait")
        if per_trait is not None and (isinstance(per_trait, bool) or not isinstance(per_trait, int) or per_trait < 1):
            raise ExperimentError(f"{section}.per_trait must be an integer >= 1, got {per_trait!r:.60}")


def _check_align_and_steer(exp: Experiment) -> None:
    align = dict(exp.align)
    analyses = align.pop("analyses", {"layer-6": {"layer": -6}})
    _align_config(align)
    for name, a in analyses.items():
        if not is_safe_name(str(name)):
            raise ExperimentError(f"align.analyses: {name!r} cannot name a directory; use letters, digits, '.', '_' "
                                  "and '-' (e.g. layer-6)")
        if not isinstance(a, dict):
            raise ExperimentError(f"align.analyses.{name}: expected a mapping (layer, sweep, token_run, methods)")
        bad = sorted(set(a) - {"layer", "sweep", "token_run", "methods"})
        if bad:
            raise ExperimentError(f"align.analyses.{name}: unknown key(s) {bad}; allowed: layer, sweep, token_run, "
                                  "methods")
        if a.get("token_run") and exp.corpus is None:
            raise ExperimentError(f"align.analyses.{name}: token_run needs a 'corpus' section")
    if exp.steer is not None:
        _steer_config(exp.steer)
        spec = exp.steer.get("layers", "sweep")
        if spec == "sweep" and not any(a.get("sweep") for a in analyses.values()):
            raise ExperimentError("steer.layers: sweep needs an align analysis with sweep: true (or give an index)")


def run_experiment(exp: Experiment, force: set[str] | None = None, only: set[str] | None = None, log=print) -> dict:
    """Run (or resume) every stage; returns {stage: seconds} and the report paths."""
    force = set(force or ())
    analyses_names = list(exp.align.get("analyses", {"layer-6": None}))
    if "align" in force:
        force |= {f"align/{n}" for n in analyses_names}
    bad = sorted((force | set(only or ())) - set(STAGES) - {f"align/{n}" for n in analyses_names})
    if bad:
        raise ExperimentError(f"unknown stage(s) {bad}; stages: {list(STAGES)}")
    check_experiment(exp)
    from ..locks import DirLock

    with DirLock(exp.out, "experiment"):  # one writer per experiment directory
        return _run_stages(exp, force, only, log)


def _run_stages(exp: Experiment, force: set[str], only: set[str] | None, log) -> dict:
    root = exp.out
    root.mkdir(parents=True, exist_ok=True)
    st = _Stages(root, force, log)
    t0 = time.perf_counter()
    run_dir = root / "extract"

    def want(stage):
        return only is None or stage in only

    extract_settings = {"models": exp.models, "pairs": exp.pairs, **exp.extract}
    st.run("extract", extract_settings, [], [run_dir / "manifest.json"], lambda: _extract(exp, run_dir),
           want("extract"))
    if exp.corpus is not None:
        st.run("corpus", {"models": exp.models, **exp.corpus}, [], [root / "corpus" / "manifest.json"],
               lambda: _corpus(exp, root / "corpus"), want("corpus"))

    align_cfg = dict(exp.align)
    analyses = align_cfg.pop("analyses", {"layer-6": {"layer": -6}})
    eval_cfg = _align_config(align_cfg)
    for name, analysis in analyses.items():
        out = root / "align" / name
        upstream = ["extract"] + (["corpus"] if analysis.get("token_run") else [])
        st.run(f"align/{name}", {**align_cfg, **analysis}, upstream, [out / "results.json"],
               lambda out=out, analysis=analysis: _align(run_dir, out, eval_cfg, analysis, log), want("align"))
    sweep_names = [n for n, a in analyses.items() if a.get("sweep")]

    steer_dir = root / "steer"
    if exp.steer is not None:
        steer_settings = dict(exp.steer)
        layers_spec = steer_settings.get("layers", "sweep" if sweep_names else -6)
        upstream = ["extract"] + ([f"align/{sweep_names[0]}"] if layers_spec == "sweep" and sweep_names else [])
        sweep_json = root / "align" / sweep_names[0] / "results.json" if sweep_names else None
        st.run("steer", steer_settings, upstream, [steer_dir / "steer_results.json"],
               lambda: _steer(run_dir, steer_dir, _steer_config(steer_settings), layers_spec, sweep_json, log),
               want("steer"))
        if exp.export is not None:
            st.run("export", dict(exp.export), ["steer"], [root / "export" / "stage.json"],
                   lambda: _export(run_dir, steer_dir, root / "export", dict(exp.export), log), want("export"))

    def write_experiment(total: float) -> None:
        atomic_write_json(root / "experiment.json", {
            "name": exp.name, "config_file": str(exp.path) if exp.path else None,
            "config": {k: getattr(exp, k) for k in sorted(_TOP)}, "stage_hashes": st.hashes,
            "seconds": {**st.seconds, "total": total}, "skipped": st.skipped,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, default=str)

    write_experiment(time.perf_counter() - t0)  # the report shows the stages run so far
    report = None
    if exp.report and want("report"):
        from ..report import write_report

        upstream = [k for k in st.hashes if k != "report"]
        st.run("report", {"report": True}, upstream, [root / "report.html", root / "report.md"],
               lambda: write_report(root))
        report = (root / "report.md", root / "report.html")
    total = time.perf_counter() - t0
    write_experiment(total)
    log(f"experiment {exp.name}: {total:.0f}s" + (f"; report: {report[1]}" if report else ""))
    return {"seconds": st.seconds, "total": total, "skipped": st.skipped, "report": report}
