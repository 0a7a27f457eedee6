"""python -m stf_jax.experiment end to end, stage skipping, and the exported control vectors of transferred vectors
loading back bit-identical.

The runner's plumbing is tested on two tiny random checkpoints of different families (Llama and Gemma 3
layouts, as HF directories); the same job on the shipped models is `make demo` (configs/experiments/demo.yaml),
and with STF_JAX_SLOW_TESTS=1 this module runs on them too."""

import json
import os

import numpy as np
import pytest
import yaml

from stf_jax.experiment import ExperimentError, check_experiment, load_experiment
from stf_jax.experiment.__main__ import main

SMALL = {
    "name": "small",
    "models": ["smollm2-135m", "gemma3-270m"],
    "pairs": "shipped",
    "extract": {"traits": ["formality", "verbosity"], "per_trait": 10, "layers": "all", "progress": False},
    "align": {"trials": 2, "variance": 0.95, "methods": ["procrustes", "affine", "linear", "identity", "trait_mean"],
              "adapter": {"max_steps": 200}, "analyses": {"layer-2": {"layer": -2}, "sweep": {"sweep": True}}},
    "steer": {"layers": "sweep", "alphas": [-0.2, 0.0, 0.2], "pairs_per_trait": 2, "methods": ["affine"],
              "bootstrap": 100, "generation_prompts": 1, "max_new_tokens": 6, "self_injection_pairs": 1},
    "export": {"traits": ["verbosity"], "conditions": ["native", "affine"], "format": "gguf"},
    "report": True,
}


REAL = os.environ.get("STF_JAX_SLOW_TESTS") == "1"
TINY = ("llama_gqa_untied_rope3", "gemma3_pattern")


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """{name in the run: HF model_type}: the shipped models (slow) or tiny random ones."""
    if REAL:
        return {"smollm2-135m": "llama", "gemma3-270m": "gemma3_text"}
    return {str(tiny_model_dir(TINY[0])): "llama", str(tiny_model_dir(TINY[1])): "gemma3_text"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("exp")
    cfg = root / "small.yaml"
    cfg.write_text(yaml.safe_dump(dict(SMALL, models=list(models))))
    assert main([str(cfg), "--out", str(root / "run")]) == 0
    return cfg, root / "run"


def test_every_stage_writes_its_outputs(small_run, models):
    _, run = small_run
    assert (run / "extract" / "manifest.json").exists()
    for name in ("layer-2", "sweep"):
        res = json.loads((run / "align" / name / "results.json").read_text())
        assert {d["source"] for d in res["directions"]} == set(models)
    steer = json.loads((run / "steer" / "steer_results.json").read_text())
    sweep = json.loads((run / "align" / "sweep" / "results.json").read_text())
    for d in steer["directions"]:  # steered at the sweep's best steerable layers
        cell = sweep["sweep"]["pairs"][f"{d['source']}->{d['target']}"]
        assert d["layer_source"] in cell["layers_source"] and 1 <= d["layer_target"] <= 30
        assert set(d["conditions"]) == {"native", "affine", "zero_shot", "random", "shuffled"}
        assert "trait_score_delta_plus" in d["generation"]["conditions"]["native"]
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html
    exp = json.loads((run / "experiment.json").read_text())
    assert set(exp["stage_hashes"]) >= {"extract", "align/layer-2", "align/sweep", "steer", "export", "report"}


def test_exported_transferred_vector_loads_back_identical(small_run, models):
    import gguf

    from stf_jax.core.vectorfile import read_control_vector as load_control_vector
    from stf_jax.extract.store import model_slug
    from stf_jax.steer.vectors import load_steering_vector

    _, run = small_run
    steer = json.loads((run / "steer" / "steer_results.json").read_text())
    for d in steer["directions"]:
        arrays = np.load(run / "steer" / d["vectors"])
        path = run / "export" / model_slug(d["target"]) / f"verbosity__affine__from_{model_slug(d['source'])}.gguf"
        cv = load_control_vector(path)
        # stored at 0.15 x the target layer's typical |h| (llama.cpp's FILE:1 = stf_jax's default strength)
        stored, unit = cv.directions[d["layer_target"]], arrays["affine/verbosity"]
        assert np.linalg.norm(stored) == pytest.approx(0.15 * d["mean_norm"], rel=1e-5)
        np.testing.assert_allclose(stored / np.linalg.norm(stored), unit / np.linalg.norm(unit), atol=1e-6)
        assert cv.metadata["stf_jax.strength_source"] == "typical_norm_fraction"
        assert cv.metadata["stf_jax.transfer_method"] == "affine"
        assert cv.model_hint == models[d["target"]]  # the HF model_type
        assert cv.metadata["stf_jax.source_model"] == d["source"]
        reader = gguf.GGUFReader(str(path))
        names = [t.name for t in reader.tensors]
        assert names == [f"direction.{d['layer_target'] - 1}"]
        assert reader.tensors[0].tensor_type == gguf.GGMLQuantizationType.F32
        vector, layer = load_steering_vector(path)
        assert layer == d["layer_target"]
        np.testing.assert_allclose(vector, stored / np.linalg.norm(stored), rtol=1e-6)  # the unit direction


def test_rerun_skips_up_to_date_stages_and_redoes_changed_ones(small_run, capsys):
    cfg, run = small_run
    capsys.readouterr()
    assert main([str(cfg), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    for stage in ("extract", "align/layer-2", "align/sweep", "steer", "export", "report"):
        assert f"[{stage}] up to date" in out, out
    changed = dict(yaml.safe_load(cfg.read_text()), export={**SMALL["export"], "conditions": ["native"]})  # a cheap stage changes
    cfg2 = cfg.parent / "changed.yaml"
    cfg2.write_text(yaml.safe_dump(changed))
    assert main([str(cfg2), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    for stage in ("extract", "align/layer-2", "align/sweep", "steer"):
        assert f"[{stage}] up to date" in out, out
    assert "[export] running" in out and "[report] running" in out
    assert not list((run / "export").rglob("*__affine__*"))  # the stage's old outputs are replaced


def test_shipped_experiment_configs_are_valid_and_typos_fail(tmp_path):
    from pathlib import Path

    import stf_jax

    configs = sorted((Path(stf_jax.__file__).parent.parent / "configs" / "experiments").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"demo", "paper", "lrt"}
    for c in configs:
        check_experiment(load_experiment(c))
    bad = tmp_path / "bad.yaml"
    for change, match in (({"steer": {"alphaz": [1]}}, "steer: unknown key"),
                          ({"align": {"trails": 3}}, "align: unknown key"),
                          ({"models": ["smollm2-135m"]}, "at least two models"),
                          ({"colour": 1}, "unknown key"),
                          ({"steer": {"carry": {"stack": 1}}}, "steer.carry.stack"),
                          ({"steer": {"carry": {"sea": "x"}}}, r"steer.carry: unknown key\(s\) \['sea'\]"),
                          ({"steer": {"methods": ["s2l"]}}, "give --sae")):
        bad.write_text(yaml.safe_dump({**SMALL, **change}))
        with pytest.raises(ExperimentError, match=match):
            check_experiment(load_experiment(bad))
    assert main([str(bad)]) == 2
    from stf_jax.experiment import _dataclass_from
    from stf_jax.steer.evaluate import SteerConfig

    cfg = _dataclass_from("steer", SteerConfig, {"methods": ["many_to_one", "s2l"], "carry": {"sae": "S", "stack": 3}},
                          ("methods",), set())  # YAML's `carry:` is the flags' CarrySettings
    assert (cfg.carry.sae, cfg.carry.stack, cfg.carry.sae_k, cfg.methods) == ("S", 3, None, ("many_to_one", "s2l"))
