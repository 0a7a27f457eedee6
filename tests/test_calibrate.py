"""`steer calibrate`: layer and strength chosen on the real shipped model, and the saved file steers at
strength 1 exactly as the calibration measured; the choice rule; bad input is one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import stf_jax
from stf_jax.steer.calibration import CalibrateOptions, _choose

PROMPTS_FAST = dict(strengths=(0.1, 0.3, 1.5), n_pairs=8, n_prompts=2, max_new_tokens=12, bootstrap=200)


@pytest.fixture(scope="module")
def smollm2():
    return stf_jax.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def formality(smollm2):
    from stf_jax.data import load_pairs
    from stf_jax.data.split import split_pairs

    pairs = load_pairs("shipped", traits=["formality"])
    train = set(split_pairs(pairs).train)
    return stf_jax.train_vector(smollm2, [p for p in pairs if p.id in train], layers=[14, 22], trait="formality")


@pytest.fixture(scope="module")
def calibrated(smollm2, formality, tmp_path_factory):
    return stf_jax.calibrate(smollm2, formality, log=lambda *a: None, **PROMPTS_FAST), tmp_path_factory.mktemp("cal")


def test_calibrated_vector_steers_at_strength_one_as_measured(smollm2, calibrated):
    cal, tmp_path = calibrated
    assert [(r["layer"], r["strength"]) for r in cal.rows] == [(14, 0.1), (14, 0.3), (14, 1.5), (22, 0.1), (22, 0.3),
                                                               (22, 1.5)]
    for r in cal.rows:  # the effect grows with strength, and 1.5 x |h| breaks the text
        assert r["effect"]["lo"] <= r["effect"]["mean"] <= r["effect"]["hi"]
    by = {(r["layer"], r["strength"]): r for r in cal.rows}
    assert all(by[(lay, 0.1)]["effect"]["mean"] < by[(lay, 0.3)]["effect"]["mean"] for lay in (14, 22))
    assert not by[(14, 1.5)]["fluent"] and not by[(22, 1.5)]["fluent"]
    chosen = by[(cal.layer, cal.strength)]
    assert chosen["fluent"] and chosen["effect"]["lo"] > 0 and cal.strength < 1.5

    written = cal.save(tmp_path, "formality.gguf")
    assert {p.name for p in written} == {"calibration.json", "calibration.md", "calibration.png", "formality.gguf"}
    saved = stf_jax.SteeringVector.load(tmp_path / "formality.gguf")
    assert saved.layers == [cal.layer] and saved.units == "residual"
    assert np.linalg.norm(saved.directions[cal.layer]) == pytest.approx(cal.strength * chosen["typical_norm"], rel=1e-5)
    assert saved.provenance["strength_source"] == "calibrated"
    # the file at strength 1 (llama.cpp's FILE:1, steer generate --alpha 1) is the calibrated steering itself
    from stf_jax.steer.calibration import PROMPTS

    chat = getattr(smollm2.tokenizer, "chat_template", None) is not None
    _, steered, info = stf_jax.steer(smollm2, tmp_path / "formality.gguf", [PROMPTS[0]], 1.0, chat_template=chat,
                                     max_new_tokens=12)
    assert info["scale"] == "stored" and steered[0] == chosen["example_plus"]


@pytest.mark.slow
def test_llamacpp_applies_the_calibrated_file_at_strength_one(smollm2, calibrated):
    """llama.cpp's `--control-vector-scaled FILE:1` with the calibrated file: its steered, unsteered and
    opposite-sign texts, scored teacher-forced by stf_jax steered with the same file at strength 1, are
    favoured in that order (CPU-independent: llama.cpp's greedy words drift with its kernels)."""
    from stf_jax.bench.llamacpp import LlamaCppUnavailable, complete, steering_shift, tool
    from stf_jax.models.registry import resolve

    try:
        tool("llama-completion")
    except LlamaCppUnavailable as exc:
        pytest.skip(str(exc))
    cal, tmp_path = calibrated
    path = cal.save(tmp_path, "formality.gguf")[-1]
    prompt, gguf = "Write a note to your neighbour about the noise:", resolve("smollm2-135m")
    texts = [complete(gguf, prompt, 16, "--control-vector-scaled", f"{path}:1"), complete(gguf, prompt, 16),
             complete(gguf, prompt, 16, "--control-vector-scaled", f"{path}:-1")]
    shift = steering_shift(smollm2, stf_jax.SteeringVector.load(path).directions, 1.0, prompt, texts)
    print("\nllama.cpp steered / unsteered / opposite:", texts, "\nshifts:", shift)
    assert texts[0] != texts[1] != texts[2]
    assert shift[0] > shift[1] + 0.1 and shift[1] > shift[2] + 0.1


def _row(layer, a, fluent, lo, mean):
    return {"layer": layer, "strength": a, "fluent": fluent, "effect": {"lo": lo, "mean": mean, "hi": mean + 1}}


def test_choice_rule():
    rows = [_row(1, 0.1, True, 0.1, 0.2), _row(1, 0.2, False, 0.3, 0.5), _row(1, 0.3, True, 0.4, 0.6),
            _row(2, 0.1, True, 0.2, 0.3), _row(2, 0.2, True, -0.1, 0.9)]
    # layer 1: 0.3 passes but 0.2 below it fails, so 0.1 (effect 0.2); layer 2: 0.2's interval reaches 0, so 0.1
    assert _choose(rows)[:2] == (2, 0.1)
    assert _choose(rows[:3] + [_row(1, 0.05, True, 0.01, 0.1)])[:2] == (1, 0.1)
    assert _choose([_row(1, 0.1, True, -0.2, 0.1)])[0] is None  # fluent but no effect: nothing chosen
    layer, a, reason = _choose([_row(1, 0.1, False, 0.2, 0.5)])
    assert layer is None and "fluency guard" in reason


@pytest.mark.parametrize("args,message", [
    (["--strengths", "nan"], "strengths"),
    (["--strengths", "0.1", "-0.2"], "strengths"),
    (["--n-pairs", "1"], "--n-pairs must be >= 2"),
    (["--name", "../x.gguf"], "--name"),
])
def test_bad_options_are_one_line_before_the_model_loads(tmp_path, args, message):
    v = stf_jax.SteeringVector({14: np.ones(576, np.float32)}, trait="formality")
    path = v.save(tmp_path / "v.gguf")
    got = subprocess.run([sys.executable, "-m", "stf_jax.steer", "calibrate", "--model", "smollm2-135m", "--vector",
                          str(path), "--out", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and message in got.stderr, got.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["width", "another model", "layer outside", "layer missing", "no trait"])
def test_bad_vectors_and_layers_are_refused(smollm2, case):
    from stf_jax.errors import UserError

    v = {"width": stf_jax.SteeringVector({14: np.ones(640, np.float32)}, trait="formality"),
         "another model": stf_jax.SteeringVector({14: np.ones(576, np.float32)}, trait="formality",
                                                 model="qwen2-0.5b"),
         "layer outside": stf_jax.SteeringVector({14: np.ones(576, np.float32)}, trait="formality"),
         "layer missing": stf_jax.SteeringVector({14: np.ones(576, np.float32)}, trait="formality"),
         "no trait": stf_jax.SteeringVector({14: np.ones(576, np.float32)})}[case]
    layers = {"layer outside": "30", "layer missing": "15"}.get(case)
    match = {"width": "d_model 576", "another model": "made for 'qwen2-0.5b'", "layer outside": "block output 1..29", "layer missing": "no direction at HF "
             "layer", "no trait": "no trait"}[case]
    with pytest.raises(UserError, match=match):
        stf_jax.calibrate(smollm2, v, layers=layers, log=lambda *a: None, **PROMPTS_FAST)


def test_options_are_checked():
    from stf_jax.options import OptionError

    with pytest.raises(OptionError, match="strengths"):
        CalibrateOptions(strengths=(0.1, float("inf")))
    with pytest.raises(OptionError, match="n_prompts"):
        CalibrateOptions(n_prompts=99)
