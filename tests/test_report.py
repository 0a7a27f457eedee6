"""python -m stf_jax.report: report.md + a self-contained report.html, checked in a real headless Chromium.

The alignment inputs are trimmed copies of real results (tests/fixtures/report/, made by
`python tests/test_report.py trim RESULTS.json OUT.json`); steer_results.json is generated here from its schema.
"""

from __future__ import annotations

import base64
import html as htmlmod
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stf_jax.report import ReportInputError, load_run, variance_curves, write_report
from stf_jax.report import figures as F

FIX = Path(__file__).parent / "fixtures" / "report"
REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("STF_REPORT_SCREENSHOTS", REPO / "runs" / "report_screenshots"))
TRANSFER = {"procrustes": 0.55, "affine": 0.72, "linear": 0.66, "lowrank": 0.5, "mlp": 0.6}
CONTROLS = {"zero_shot": 0.05, "shuffled": 0.12, "random": 0.0}


# ----------------------------------------------------------------------------------------------------------------
# fixtures


def trim_results(res: dict, digits: int = 4) -> dict:
    """A small copy of an alignment results.json: per-trial lists, adapters and unused sweep matrices dropped,
    floats rounded. Everything stf_jax.align.report.markdown and the report read is kept."""
    def walk(x, key=None):
        if isinstance(x, dict):
            return {k: walk(v, k) for k, v in x.items() if k != "adapters" and not (k == "trials" and isinstance(v, list))}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, float) and math.isfinite(x):
            return round(x, digits)
        return x

    out = walk(res)
    out.get("inputs", {}).pop("arrays", None)
    for d in out.get("directions", []):
        for scr in (d.get("scrambling") or {}).values():  # only the overall cosines are shown
            for v in scr.values():
                for k in [k for k in v if k.startswith("per_trait") or k == "train_centered"]:
                    del v[k]
        for v in d.get("methods", {}).values():
            v.pop("train_centered", None)
    for s in ((out.get("sweep") or {}).get("pairs") or {}).values():
        for k in ("train", "scale", "test_centered_std"):
            s.pop(k, None)
        for k in ("test", "test_centered", "validation_centered"):
            if k in s:
                s[k] = [[round(v, 3) for v in row] for row in s[k]]
    return out


def _stat(values, rng, n_boot=200) -> dict:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if not len(v):
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan}
    boots = rng.choice(v, size=(n_boot, len(v))).mean(1)
    return {"mean": float(v.mean()), "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975))}


def _curve(slope, alphas, rng, noise=0.04):
    a = np.asarray(alphas)
    mean = slope * a + 0.8 * slope * a ** 3 + rng.normal(0, noise, len(a))
    half = 0.05 + 0.25 * np.abs(a) + rng.uniform(0, 0.03, len(a))
    return {"mean": mean.tolist(), "lo": (mean - half).tolist(), "hi": (mean + half).tolist()}


def _slope(curve, alphas) -> float:
    return float(np.polyfit(alphas, curve["mean"], 1)[0])


def make_steer_results(traits, models=(("gemma3-270m", 13), ("smollm2-135m", 25)), seed=0,
                       alphas=(-0.2, -0.1, 0.0, 0.1, 0.2)) -> dict:
    """A realistic steer/steer_results.json (schema of stf_jax.steer eval), with a few NaNs and absences:
    the second direction has no `mlp` and no `shuffled` condition; `random` has a NaN Pearson r."""
    rng = np.random.default_rng(seed)
    alphas = list(alphas)
    native_slope = {m: {t: float(rng.normal(2.0, 0.8)) for t in traits} for m, _ in models}
    out = {"stf_jax": "0.1.0", "created": "2026-11-21T12:00:00",
           "config": {"alphas": alphas, "mode": "additive", "scale": "mean-norm", "pairs_per_trait": 8,
                      "bootstrap": 1000, "seed": seed},
           "alphas": alphas, "models": {}, "directions": []}
    for m, layer in models:
        tr = {}
        for t in traits:
            c = _curve(native_slope[m][t], alphas, rng)
            s = _slope(c, alphas)
            tr[t] = {"curve": c, "slope": {"mean": s, "lo": s - 0.4, "hi": s + 0.4},
                     "monotonic": bool(np.all(np.diff(c["mean"]) > 0)), "n_pairs": 8}
        out["models"][m] = {"layer": layer, "mean_norm": float(rng.uniform(8, 60)),
                            "in_model": {"traits": tr, "n_monotonic": sum(v["monotonic"] for v in tr.values()),
                                         "n_positive_slope": sum(v["slope"]["lo"] > 0 for v in tr.values()),
                                         "n_slope_above_zero": {"mean": 25.0, "lo": 24.0, "hi": 26.0},
                                         "n_traits": len(tr)}}
    for di, ((src, ls), (tgt, lt)) in enumerate([(models[0], models[1]), (models[1], models[0])]):
        native = out["models"][tgt]["in_model"]["traits"]
        conds = {"native": {"kind": "native", "method": None, "traits": {}, "summary": {}}}
        for t in traits:
            conds["native"]["traits"][t] = {"curve": native[t]["curve"], "slope": native[t]["slope"], "slope_ratio": 1.0,
                                            "pearson_r": 1.0, "mse": 0.0, "cosine_to_native": 1.0}
        specs = [(c, "transferred", r) for c, r in TRANSFER.items()] + [(c, "control", r) for c, r in CONTROLS.items()]
        if di == 1:
            specs = [s for s in specs if s[0] not in ("mlp", "shuffled")]
        for name, kind, ratio in specs:
            per = {}
            for t in traits:
                r = max(ratio + rng.normal(0, 0.12 if kind == "transferred" else 0.05), -0.2)
                c = _curve(r * native_slope[tgt][t], alphas, rng)
                s = _slope(c, alphas)
                nm, cm = np.asarray(native[t]["curve"]["mean"]), np.asarray(c["mean"])
                pr = float(np.corrcoef(nm, cm)[0, 1])
                if name == "random" and t == traits[0]:
                    pr = math.nan  # flat curve: undefined correlation
                per[t] = {"curve": c, "slope": {"mean": s, "lo": s - 0.5, "hi": s + 0.5},
                          "slope_ratio": s / native[t]["slope"]["mean"], "pearson_r": pr,
                          "mse": float(np.mean((nm - cm) ** 2)),
                          "cosine_to_native": float(rng.normal(0.5 if kind == "transferred" else 0.02, 0.05))}
            summary = {k: _stat([v[k] for v in per.values()], rng) for k in ("slope_ratio", "pearson_r", "mse")}
            summary["slope"] = _stat([v["slope"]["mean"] for v in per.values()], rng)
            summary["effect_ratio"] = {"mean": summary["slope"]["mean"] / 2.0, "lo": math.nan, "hi": math.nan}
            summary["n_monotonic"] = int(sum(np.all(np.diff(v["curve"]["mean"]) > 0) for v in per.values()))
            if name == "random":
                summary["pearson_r"] = {"mean": math.nan, "lo": math.nan, "hi": math.nan}
            conds[name] = {"kind": kind, "method": name if kind == "transferred" else None, "traits": per,
                           "summary": summary}
        for k in ("slope_ratio", "pearson_r", "mse"):
            conds["native"]["summary"][k] = {"mean": conds["native"]["traits"][traits[0]][k], "lo": math.nan,
                                             "hi": math.nan}
        comps = []
        for a, b in (("native", "procrustes"), ("procrustes", "zero_shot"), ("procrustes", "random"),
                     ("affine", "procrustes")):
            d = [conds[a]["traits"][t]["slope"]["mean"] - conds[b]["traits"][t]["slope"]["mean"] for t in traits]
            comps.append({"a": a, "b": b, "metric": "slope", "delta": _stat(d, rng), "n": 8 * len(traits)})
        ci = lambda x, h: {"mean": x, "lo": x - h, "hi": x + h}  # noqa: E731
        gen = {"trait": "verbosity", "alpha": 0.2, "max_new_tokens": 48, "n_prompts": 16,
               "unsteered": {"mean_length": ci(80.0, 5.0)}, "conditions": {
                   c: {"mean_length_plus": ci(L, 6.0), "delta_plus": ci(L - 80.0, 4.0),
                       "mean_length_minus": ci(160.0 - L, 6.0), "delta_minus": ci(80.0 - L, 4.0),
                       "mean_length": ci(L, 6.0)}
                   for c, L in (("native", 131.0), ("procrustes", 112.5), ("affine", 118.0), ("zero_shot", 84.0),
                                ("random", 83.0))}}
        out["directions"].append({"source": src, "target": tgt, "layer_source": ls, "layer_target": lt,
                                  "conditions": conds, "comparisons": comps, "generation": gen})
    return out


def make_extraction_run(root: Path, layers: dict[str, list[int]], n: int = 120, d: int = 24, seed: int = 0) -> Path:
    """A tiny extraction run: <model>/layer_<idx>.safetensors with a `vectors` array [n, d] (for the PCA
    variance fallback)."""
    from safetensors.numpy import save_file

    from stf_jax.extract.store import FORMAT_VERSION

    rng = np.random.default_rng(seed)
    models = []
    for model, ls in layers.items():
        (root / model).mkdir(parents=True, exist_ok=True)
        files = {}
        for layer in ls:
            x = rng.normal(size=(n, d)) * np.geomspace(3, 0.1, d)
            x[0] = 0.0  # a zero row (as at layer 0) is dropped
            files[str(layer)] = f"{model}/layer_{layer:03d}.safetensors"
            save_file({"vectors": x.astype(np.float32)}, str(root / files[str(layer)]))
        models.append({"name": model, "slug": model, "files": files})
    (root / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "models": models}))
    return root


def build_run_dir(root: Path) -> Path:
    run = root / "run"
    align = {"layer-6": json.loads((FIX / "align_layer-6.json").read_text()),
             "sweep": json.loads((FIX / "align_sweep.json").read_text())}
    layers: dict[str, list[int]] = {}
    for res in align.values():
        for d in res["directions"]:
            layers.setdefault(d["source"], []).append(d["layer_source"])
            layers.setdefault(d["target"], []).append(d["layer_target"])
    ext = make_extraction_run(root / "extract", {m: sorted(set(v)) for m, v in layers.items()})
    for name, res in align.items():
        for m in res["inputs"]["models"].values():
            m["run"] = str(ext)  # the real run is not in the repository: point at the tiny one
        (run / "align" / name).mkdir(parents=True)
        (run / "align" / name / "results.json").write_text(json.dumps(res))
    traits = align["layer-6"]["traits"]
    (run / "steer").mkdir()
    (run / "steer" / "steer_results.json").write_text(json.dumps(make_steer_results(traits), allow_nan=True))
    (run / "experiment.json").write_text(json.dumps({  # as stf_jax.experiment writes it
        "name": "shipped-pair", "config_file": "configs/experiments/shipped.yaml",
        "config": {"models": ["gemma3-270m", "smollm2-135m"], "align": {"k": None, "trials": 5},
                   "steer": {"alphas": [-0.2, -0.1, 0.0, 0.1, 0.2]}},
        "stage_hashes": {"extract": "a1b2c3", "align": "d4e5f6", "steer": "0718aa", "report": "99bb00"},
        "seconds": {"align": 64.9, "steer": 301.0, "total": 366.2}, "skipped": ["extract"],
        "finished": "2026-11-21T12:00:00"}))
    for kind in JUDGE_KINDS:  # trimmed real outputs of python -m stf_jax.judge (behaviour, ood, fewshot)
        (run / "judge" / kind).mkdir(parents=True)
        shutil.copy(FIX / f"judge_{kind}.json", run / "judge" / kind / f"{kind}_results.json")
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = build_run_dir(root)
    t0 = time.perf_counter()
    md_path, html_path = write_report(run, root / "out")
    return {"run": run, "out": root / "out", "md": md_path, "html": html_path, "seconds": time.perf_counter() - t0,
            "steer": json.loads((run / "steer" / "steer_results.json").read_text()),
            "align": json.loads((run / "align" / "layer-6" / "results.json").read_text())}


# ----------------------------------------------------------------------------------------------------------------
# markdown and HTML content


JUDGE_KINDS = ("behaviour", "ood", "fewshot")
EXPECTED_FIGURES = {"fig-answer", "fig-behaviour-traits", "fig-ood", "fig-fewshot", "fig-align-pairs", "fig-pca-variance", "fig-scrambling-layer-6", "fig-scrambling-sweep",
                    "fig-sweep-sweep", "fig-steer-in-model",
                    "fig-traits-layer-6-gemma3-270m-smollm2-135m", "fig-traits-layer-6-smollm2-135m-gemma3-270m",
                    "fig-traits-sweep-gemma3-270m-smollm2-135m", "fig-traits-sweep-smollm2-135m-gemma3-270m",
                    "fig-slopes-gemma3-270m-smollm2-135m", "fig-slopes-smollm2-135m-gemma3-270m",
                    "fig-alpha-gemma3-270m-smollm2-135m", "fig-alpha-smollm2-135m-gemma3-270m"}


def test_markdown_has_tables_and_numbers(report):
    md = report["md"].read_text()
    a = report["align"]["directions"][0]["methods"]["procrustes"]["test_centered"]
    assert f"{a['mean']:.3f} ± {a['std']:.3f}" in md  # align's own table, via stf_jax.align.report.markdown
    for heading in ("## Answer", "## Behaviour: independent judges of steered text", "## Out-of-distribution pairs",
                    "## Few-shot maps (the Preference-Vector idea)", "## Experiment", "## Headline", "## Alignment overview", "## Alignment: layer-6",
                    "## Alignment: sweep", "Scrambling hierarchy", "## Steering",
                    "### In-model steering", "### Transfer gemma3-270m → smollm2-135m (13→25)", "Paired comparisons",
                    "Generation check", "## Figures", "Per-trait test cosine (centered)", "## Layer sweep ("):
        assert heading in md, heading
    st = report["steer"]["directions"][0]["conditions"]["affine"]["summary"]["slope_ratio"]
    assert f"{st['mean']:.2f} [{st['lo']:.2f}, {st['hi']:.2f}]" in md
    slope = report["steer"]["directions"][0]["conditions"]["native"]["traits"]["verbosity"]["slope"]["mean"]
    assert re.search(rf"\| verbosity \| {slope:.3f} \|", md)
    im = report["steer"]["models"]["smollm2-135m"]["in_model"]
    assert f"| `smollm2-135m` | 25 |" in md and f"| {im['n_traits']} | {im['n_monotonic']} |" in md
    assert "| `shipped-pair`" not in md and "shipped-pair" in md  # experiment name in the title
    assert "| `steer` | ran | hash 0718aa | 301.0 |" in md and "| `extract` | skipped (up to date) |" in md
    assert "| `unsteered` | 80.0 [75.0, 85.0] |" in md and "Δ = a − b" in md
    assert not re.search(r"\bnan\b", md, re.I)  # NaNs render as —
    for fid in EXPECTED_FIGURES:
        assert f"figures/{fid}.png" in md
        assert (report["out"] / "figures" / f"{fid}.png").stat().st_size > 5000
    # absent conditions in the second direction are simply not rendered
    second = md.split("### Transfer smollm2-135m → gemma3-270m")[1]
    assert "`mlp`" not in second.split("## Figures")[0] and "`procrustes`" in second
    # the answer comes first, configuration and stage tables last
    order = [md.index(h) for h in ("## Answer", "## Headline", "## Alignment overview", "## Steering", "## Experiment")]
    assert order == sorted(order)
    answer = md.split("## Answer")[1].split("## Headline")[0]
    assert "**Geometrically**" in answer and "**Behaviourally**" in answer and "`trait_mean`" in answer
    assert "figures/fig-answer.png" in answer and "out-of-distribution" in answer and "judges" in answer


def test_html_is_self_contained(report):
    html = report["html"].read_text()
    imgs = re.findall(r"<img\b[^>]*>", html)
    assert len(imgs) == len(EXPECTED_FIGURES)
    ids = set(re.findall(r'<figure id="([^"]+)"', html))
    assert ids == EXPECTED_FIGURES
    for tag in imgs:
        src = re.search(r'src="([^"]+)"', tag).group(1)
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        alt = re.search(r'alt="([^"]*)"', tag).group(1)
        assert len(alt) > 20
    assert html.count("<figcaption>") == len(EXPECTED_FIGURES)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "<style>" in html and html.count("<table>") >= 20
    a = report["align"]["directions"][0]["methods"]["procrustes"]["test_centered"]
    assert f"{a['mean']:.3f} ± {a['std']:.3f}" in html
    hrefs = set(re.findall(r'href="#([^"]+)"', html))
    anchors = set(re.findall(r'id="([^"]+)"', html))
    assert hrefs and hrefs <= anchors  # table of contents and figure list resolve


def test_figures_individually(report):
    res = report["align"]
    st = report["steer"]
    d = res["directions"][0]
    figs = [F.trait_transfer_figure(d, res["traits"]), F.scrambling_figure(res["directions"]),
            F.pair_matrix_figure([("a", d), ("b", res["directions"][1])]),
            F.alpha_curves_figure(st["directions"][1], st["alphas"]), F.slope_ratio_figure(st["directions"][0]),
            F.in_model_slopes_figure(st["models"]),
            F.variance_figure({"x": {"m @ layer 1": {"curve": [0.5, 0.8, 0.95, 1.0], "k": 2, "source": "results.json"}}})]
    sweep = json.loads((report["run"] / "align" / "sweep" / "results.json").read_text())["sweep"]
    figs.append(F.layer_sweep_figure(sweep))
    pair = next(iter(sweep["pairs"].values()))
    pair["best_on_test"] = {"layer_source": pair["layers_source"][3], "layer_target": pair["layers_target"][2],
                            "test_centered": 0.4}  # differs from the chosen pair: drawn as a second marker
    figs.append(F.layer_sweep_figure(sweep))
    # degenerate inputs: still a figure (a message), never an exception
    nan = {"mean": math.nan, "std": math.nan}
    figs += [F.trait_transfer_figure({"methods": {}}), F.scrambling_figure([]), F.pair_matrix_figure([]),
             F.layer_sweep_figure({}), F.variance_figure({}), F.alpha_curves_figure({"conditions": {}}, []),
             F.slope_ratio_figure({"conditions": {}}), F.in_model_slopes_figure({}),
             F.pair_matrix_figure([("nan", {"methods": {"procrustes": {"test_centered": nan}}})])]
    for fig in figs:
        assert len(F.png_bytes(fig, dpi=40)) > 1000


def test_align_markdown_of_an_older_layout(report):
    from stf_jax.report.render import _align_markdown

    res = json.loads((report["run"] / "align" / "sweep" / "results.json").read_text())
    for s in res["sweep"]["pairs"].values():
        s.pop("best_on_test", None)  # written before the validation-slice selection existed
    text = _align_markdown(res)
    assert "### Layer sweep (Procrustes" in text and "Per-trait test cosine (centered)" in text
    best = next(iter(res["sweep"]["pairs"].values()))["best"]
    assert f"best layers {best['layer_source']} → {best['layer_target']}" in text


def test_variance_curve_prefers_results_field(report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report["run"] / "align", run / "align")
    p = run / "align" / "layer-6" / "results.json"
    res = json.loads(p.read_text())
    d = res["directions"][0]
    d["variance_curve"] = {d["source"]: [0.3, 0.6, 0.9, 1.0], d["target"]: [0.2, 0.5, float("nan")]}
    p.write_text(json.dumps(res))
    curves = variance_curves(load_run(run))["layer-6"]
    assert curves[f"{d['source']} @ layer {d['layer_source']}"]["source"] == "results.json"
    assert curves[f"{d['target']} @ layer {d['layer_target']}"]["source"] == "run files"  # NaN: fall back
    fallback = curves[f"{d['target']} @ layer {d['layer_target']}"]["curve"]
    assert np.all(np.diff(fallback) >= -1e-9) and abs(fallback[-1] - 1.0) < 1e-6


def test_missing_results_errors(tmp_path, capsys):
    from stf_jax.report.__main__ import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match=r"python -m stf_jax\.align.*\n.*python -m stf_jax\.steer eval"):
        write_report(tmp_path / "empty")
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no results to report" in err and "python -m stf_jax.experiment" in err
    with pytest.raises(ReportInputError, match="no such directory"):
        write_report(tmp_path / "absent")


def test_cli_steer_only(tmp_path, capsys, report):
    from stf_jax.report.__main__ import main

    run = tmp_path / "steer_only"
    (run / "steer").mkdir(parents=True)
    shutil.copy(report["run"] / "steer" / "steer_results.json", run / "steer")
    assert main([str(run), "--out", str(tmp_path / "o"), "--dpi", "40"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "o" / "report.md"), str(tmp_path / "o" / "report.html")]
    html = Path(printed[1]).read_text()
    # the answer figure + the steering figures; the answer says geometry is missing rather than guessing
    assert html.count("<img") == 6 and "Alignment" not in html and "No geometric results in this run." in html


# ----------------------------------------------------------------------------------------------------------------
# a real browser

CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { var f = i.closest('figure'); return f ? f.id : i.alt; });
  var pre = document.createElement('pre');
  pre.id = 'imgcheck';
  pre.textContent = JSON.stringify({n: imgs.length, bad: bad,
                                    widths: imgs.map(function (i) { return i.naturalWidth; })});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.fail("Chromium is needed for the browser check: `make test` installs it "
                    "(apt-get install chromium)")
    return exe


def run_chromium(args: list[str], profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def browser_image_check(html_path: Path, work: Path) -> dict:
    """Load a copy of the report with a checking script in headless Chromium; {'n', 'bad', 'widths'}."""
    probe = work / f"probe_{html_path.stem}.html"
    probe.write_text(html_path.read_text().replace("</body>", CHECK_SCRIPT + "\n</body>"))
    proc = run_chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], work / "profile")
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no result from Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(htmlmod.unescape(m.group(1)))


def test_browser_loads_every_image(report, tmp_path):
    html_path = report["html"]
    result = browser_image_check(html_path, tmp_path)
    assert result["n"] == len(EXPECTED_FIGURES)
    assert result["bad"] == [] and min(result["widths"]) > 100

    # the check itself must catch a broken image: corrupt one data URI in a copy
    broken = tmp_path / "broken.html"
    text = html_path.read_text()
    first = re.search(r'<figure id="([^"]+)"><img src="data:image/png;base64,([^"]{40})', text)
    broken.write_text(text.replace(first.group(2), base64.b64encode(b"this is not a png, sorry!!!!").decode(), 1))
    result = browser_image_check(broken, tmp_path)
    assert result["n"] == len(EXPECTED_FIGURES) and result["bad"] == [first.group(1)]

    # screenshots: the top of the page, and copies that start at later sections (headless screenshots do not
    # follow #fragments reliably, so the content before the section is cut out of the copy)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, start in (("report_top", None), ("report_alignment_sweep", "sec-alignment-sweep"),
                        ("report_steering", "sec-steering"),
                        ("report_transfer", "sec-transfer-gemma3-270m-to-smollm2-135m-13-to-25")):
        page = html_path
        if start:
            page = tmp_path / f"{name}.html"
            page.write_text(starting_at(text, start))
        shot = tmp_path / f"{name}.png"
        proc = run_chromium([f"--screenshot={shot}", "--window-size=1400,6000", "--hide-scrollbars",
                             "--virtual-time-budget=5000", page.as_uri()], tmp_path / "profile")
        assert shot.is_file() and shot.stat().st_size > 50_000, proc.stderr[-2000:]
        shutil.copy(shot, SHOTS / shot.name)


def starting_at(html: str, element_id: str) -> str:
    """The report with the main column's content before the element `element_id` removed."""
    head, rest = html.split('<p class="meta">', 1)
    meta, body = rest.split("</p>", 1)
    i = body.index(f'id="{element_id}"')
    return head + '<p class="meta">' + meta + "</p>\n" + body[body.rindex("<", 0, i):]


if __name__ == "__main__":  # python tests/test_report.py trim RESULTS.json OUT.json
    if len(sys.argv) == 4 and sys.argv[1] == "trim":
        Path(sys.argv[3]).write_text(json.dumps(trim_results(json.loads(Path(sys.argv[2]).read_text())),
                                                separators=(",", ":")) + "\n")
    else:
        sys.exit(__doc__)


def test_variance_curve_from_run_files_of_a_model_given_as_a_path(tiny_model_dir, tmp_path):
    """Models given as paths live under a slugged folder: the report finds their layer through the store
    (it guessed the file from the name and drew no curve), and refuses quietly what is not there."""
    from stf_jax.data.pairs import load_pairs
    from stf_jax.extract.driver import ExtractOptions, extract_pairs
    from stf_jax.extract.store import load_layer
    from stf_jax.report.load import curve_from_run

    model = str(tiny_model_dir("llama_gqa_untied_rope3"))
    pairs = load_pairs("shipped", traits=["formality", "verbosity"])[:24]
    extract_pairs([model], pairs, tmp_path / "run", ExtractOptions(layers=("2",), progress=False))
    curve = curve_from_run(tmp_path / "run", model, 2)
    x = np.asarray(load_layer(tmp_path / "run", model, 2)["vectors"], np.float64)
    ev = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
    np.testing.assert_allclose(curve[:5], (np.cumsum(ev) / ev.sum())[:5], atol=1e-6)
    assert curve_from_run(tmp_path / "run", model, 3) is None and curve_from_run(tmp_path / "nope", model, 2) is None


def test_answer_names_controls_whose_text_broke():
    from stf_jax.report.answer import _broken_controls

    rows = [{"condition": "random", "direction": "a→b", "guard": "0/7"},
            {"condition": "shuffled", "direction": "a→b", "guard": "7/7"},
            {"condition": "zero_shot", "direction": "b→a", "guard": "4/7"}]
    assert _broken_controls(rows) == " (the fluency guard failed for most traits of `random` in a→b (0/7): their text broke)"
    assert _broken_controls(rows[1:]) == ""
