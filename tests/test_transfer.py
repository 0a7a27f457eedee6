"""Map files, map sets and `python -m stf_jax.transfer` on a planted run (fast; real models in test_transfer_real).

Checks: every method's map survives save/load bit for bit; the held-out quality is the protocol's
number; the strength convention; multi-layer files and libraries; bad inputs are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from stf_jax.align import EvalConfig, evaluate
from stf_jax.align.adapters import AdapterConfig
from stf_jax.align.maps import METHODS, VECTOR_METHODS, FitSettings, fit_map, map_from_tensors, map_tensors
from stf_jax.align.synthetic import planted_vectors
from stf_jax.core.vectorfile import read_control_vector as load_control_vector, write_vector_file as export_control_vector
from stf_jax.testing import shipped_pairs, write_run
from stf_jax.transfer import MapFileError, TransferInputError, carry, load_map_set, transfer_files
from stf_jax.transfer.fit import fit_map_set

QUICK = AdapterConfig(max_steps=100, eval_every=50)
NORMS = {"A": {1: 2.0, 2: 3.0, 3: 4.0}, "B": {1: 10.0, 2: 20.0, 3: 30.0}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Models A (d 24) and B (d 32), 4 blocks each; layers 1..3 share a planted map."""
    pairs = shipped_pairs()
    names = sorted({p.trait for p in pairs})
    traits = np.array([names.index(p.trait) for p in pairs])
    layers = {"A": [], "B": []}
    for lay in range(5):
        a, b = planted_vectors(traits, [24, 32], 12, noise=0.1, seed=10 + lay, normalize=True)
        layers["A"].append(a)
        layers["B"].append(b)
    return write_run(tmp_path_factory.mktemp("run"), pairs, layers)


@pytest.mark.parametrize("method", VECTOR_METHODS)  # identity, procrustes, affine, linear, lowrank, mlp
def test_every_method_survives_save_and_load_bit_for_bit(run, tmp_path, method):
    ms = fit_map_set(run, "A", "B", method, 2, norms=NORMS, adapter=QUICK, log=lambda *a: None)
    loaded = load_map_set(ms.save(tmp_path / method))
    v = np.random.default_rng(1).standard_normal(24).astype(np.float32)
    a, b = carry(ms, {2: v}).directions[2], carry(loaded, {2: v}).directions[2]
    assert np.array_equal(a, b)
    assert loaded.digest() == ms.digest()
    for x, y in zip(map_tensors(ms.maps[2].map).values(), map_tensors(loaded.maps[2].map).values()):
        assert np.array_equal(x, y)
    # relative strength: |out| / |h_t| == |in| / |h_s|
    np.testing.assert_allclose(np.linalg.norm(a) / 20.0, np.linalg.norm(v) / 3.0, rtol=1e-5)


def test_held_out_quality_is_the_protocols_number(run):
    """One trial of the protocol with the same split and k: the map file's quality equals it."""
    ms = fit_map_set(run, "A", "B", "affine", 2, norms=None, log=lambda *a: None)
    q = ms.maps[2].header["quality"]
    res = evaluate([str(run)], EvalConfig(methods=("affine", "trait_mean"), trials=1, scramble=()), layer=2,
                   log=lambda *a: None)
    m = res["directions"][0]["methods"]
    assert abs(q["centered_cosine"] - m["affine"]["test_centered"]["mean"]) < 1e-6
    assert abs(q["trait_mean_centered"] - m["trait_mean"]["test_centered"]["mean"]) < 1e-6
    assert q["centered_cosine"] > q["trait_mean_centered"]  # the planted map beats the label baseline


def test_planted_map_carries_the_true_direction():
    """A target that is an exact linear image of the source: affine recovers it, so the carried vector of a
    new input (not a training row) points where the true map sends it."""
    rng = np.random.default_rng(0)
    x_s = rng.standard_normal((400, 16)).astype(np.float32)
    a_true = rng.standard_normal((16, 20)).astype(np.float32)
    m, _ = fit_map("affine", x_s, x_s @ a_true, settings=FitSettings(ridge=0.0))
    v = rng.standard_normal(16).astype(np.float32)
    got = np.asarray(m(jnp.asarray(v)))
    want = v @ a_true
    assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99999


def test_depth_map_set_carries_a_multi_layer_control_vector(run, tmp_path):
    ms = fit_map_set(run, "A", "B", "affine", "depth", norms=NORMS, log=lambda *a: None)
    assert ms.layer_pairs() == [(2, 2), (3, 3)]  # steerable layers 2..n-1 of 4 blocks
    ms.save(tmp_path / "maps")
    rng = np.random.default_rng(2)
    lib = tmp_path / "lib"
    dirs = {lay: rng.standard_normal(24).astype(np.float32) * 5 for lay in (2, 3, 4)}
    export_control_vector(lib / "one.gguf", dirs, model_hint="llama", metadata={"trait": "formality"})
    export_control_vector(lib / "sub" / "two.safetensors", {2: dirs[2]}, model_hint="llama")
    written = transfer_files(load_map_set(tmp_path / "maps"), [lib], tmp_path / "out", log=lambda *a: None)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p, _ in written) == ["one.gguf", "sub/two.gguf"]
    cv = load_control_vector(tmp_path / "out" / "one.gguf")
    assert cv.layers == [2, 3] and cv.d_model == 32
    assert cv.metadata["stf_jax.transfer_method"] == "affine" and cv.metadata["stf_jax.trait"] == "formality"
    assert json.loads(cv.metadata["stf_jax.unmapped_source_layers"]) == [4]  # reported, not silently dropped
    for lay in (2, 3):
        np.testing.assert_allclose(np.linalg.norm(cv.directions[lay]) / NORMS["B"][lay],
                                   np.linalg.norm(dirs[lay]) / NORMS["A"][lay], rtol=1e-5)
    two = load_control_vector(tmp_path / "out" / "sub" / "two.gguf")
    assert two.layers == [2]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stf_jax.transfer", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def _cli_inproc(capsys, *args):
    """The CLI's own entry (cli_main) in this process: same exit code and stderr, no interpreter start."""
    from stf_jax.errors import cli_main
    from stf_jax.transfer.__main__ import main

    capsys.readouterr()
    try:
        cli_main(main, list(map(str, args)))
    except SystemExit as exc:
        code = exc.code
    return _Result(code, capsys.readouterr().err)


def test_cli_fit_apply_and_bad_inputs(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --out paths, as a user types them
    maps_dir = tmp_path / "maps"
    got = _cli("fit", run, "--source", "A", "--target", "B", "--method", "procrustes", "--layers", "2",
               "--no-norms", "--out", maps_dir)
    assert got.returncode == 0, got.stderr
    assert "held-out centered cosine" in got.stderr and (maps_dir / "mapset.json").exists()
    v = np.random.default_rng(3).standard_normal(24).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    got = _cli_inproc(capsys, "apply", "--map", maps_dir, tmp_path / "v.npy", "--layer", "2", "--strength", "keep",
                      "--out", "out")
    assert got.returncode == 0, got.stderr
    assert [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "out").rglob("*.gguf")] == ["out/v.gguf"]
    out = load_control_vector(tmp_path / "out" / "v.gguf")
    np.testing.assert_allclose(np.linalg.norm(out.directions[2]), np.linalg.norm(v), rtol=1e-5)

    np.save(tmp_path / "wide.npy", np.ones(100, np.float32))
    np.save(tmp_path / "nan.npy", np.full(24, np.nan, np.float32))
    np.save(tmp_path / "zero.npy", np.zeros(24, np.float32))
    (tmp_path / "v.txt").write_text("1 2 3")
    newer = tmp_path / "newer"
    newer.mkdir()
    index = json.loads((maps_dir / "mapset.json").read_text())
    (newer / "mapset.json").write_text(json.dumps({**index, "format_version": 99}))
    cases = [
        (["apply", "--map", maps_dir, tmp_path / "wide.npy", "--layer", "2", "--strength", "keep"], "d_model 24"),
        (["apply", "--map", maps_dir, tmp_path / "nan.npy", "--layer", "2", "--strength", "keep"], "NaN"),
        (["apply", "--map", maps_dir, tmp_path / "zero.npy", "--layer", "2", "--strength", "keep"], "all zeros"),
        (["apply", "--map", maps_dir, tmp_path / "v.npy", "--layer", "3", "--strength", "keep"], "source layer"),
        (["apply", "--map", maps_dir, tmp_path / "v.npy", "--layer", "2"], "typical |h|"),
        (["apply", "--map", maps_dir, tmp_path / "v.txt"], "unknown vector file type"),
        (["apply", "--map", maps_dir, tmp_path / "v.npy"], "records no layer"),
        (["apply", "--map", newer, tmp_path / "v.npy", "--layer", "2"], "newer than this stf_jax"),
        (["apply", "--map", tmp_path, tmp_path / "v.npy", "--layer", "2"], "not a map set"),
        (["fit", run, "--source", "A", "--target", "C", "--no-norms", "--out", tmp_path / "x"], "'C' is not in"),
    ]
    for i, (args, expected) in enumerate(cases):
        run_cli = _cli if i == 0 else (lambda *a: _cli_inproc(capsys, *a))  # one through a real interpreter
        got = run_cli(*args, "--out", tmp_path / "bad") if args[0] == "apply" else run_cli(*args)
        assert got.returncode == 2, (args, got.stderr)
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, got.stderr)
        assert "Traceback" not in got.stderr


def test_map_for_other_models_and_damaged_files_are_refused(run, tmp_path):
    ms = fit_map_set(run, "A", "B", "affine", 2, norms=NORMS, log=lambda *a: None)
    ms.save(tmp_path / "maps")
    f = next((tmp_path / "maps").glob("map_*.safetensors"))
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(MapFileError, match="checksum|readable"):
        load_map_set(tmp_path / "maps")
    with pytest.raises(TransferInputError, match="d_model"):
        carry(ms, {2: np.ones(32, np.float32)})
    with pytest.raises(ValueError, match="has shape"):
        map_from_tensors("affine", {"weight": np.zeros((3, 3)), "bias": np.zeros(3)}, 24, 32, FitSettings())


def test_method_table_is_the_only_dispatch():
    """No `if method == "procrustes"`-style branches on method names outside align/maps.py (the adapters' kinds
    are a table too, adapters.ARCHITECTURES)."""
    import re

    root = Path(__file__).resolve().parents[1] / "stf_jax"
    scanned = [p for d in ("align", "steer", "transfer", "run", "report", "judge") for p in (root / d).rglob("*.py")]
    names = "|".join(n for n in METHODS if n != "identity")
    pattern = re.compile(rf'(==|!=)\s*"({names})"|"({names})"\s+(in|not in)\s+\w')
    offenders = [f"{p.relative_to(root)}:{i}" for p in scanned if p.name != "maps.py" for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_steering_strength_and_export_target_are_checked(tiny_model_dir, tmp_path):
    """Issue 12 items 3 and 4: a non-finite or absurd strength, and a vector exported for a model it does not
    fit, are one-line input errors (they used to exit 0 with empty text / a file llama.cpp cannot use)."""
    from stf_jax.errors import SteeringInputError
    from stf_jax.models.loading import load_model
    from stf_jax.steer.apply import steered_completions
    from stf_jax.steer.export_cli import _for_target

    model_dir = tiny_model_dir("gemma3_pattern")
    model = load_model(str(model_dir))
    d = model.config.d_model
    for alpha in (float("nan"), float("inf"), 1e30):
        with pytest.raises(SteeringInputError, match="not a usable number"):
            steered_completions(model, ["hi"], {2: np.ones(d, np.float32)}, alpha, max_new_tokens=2)
    with pytest.raises(SteeringInputError, match="d_model"):
        _for_target(str(model_dir), np.ones(d + 3, np.float32), 2, "unit")
    with pytest.raises(SteeringInputError, match="outside"):
        _for_target(str(model_dir), np.ones(d, np.float32), model.config.n_layers + 5, "unit")


def test_repeng_reads_transferred_files(run, tmp_path):
    """repeng's ControlVector.import_gguf reads a transferred multi-layer file: same directions, its
    direction.i convention (block i = HF layer i + 1), the target's model_type as model hint."""
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, removed in NumPy 2 (test-only shim)
        np.float_ = np.float64
    repeng = pytest.importorskip("repeng")
    ms = fit_map_set(run, "A", "B", "affine", "depth", norms=NORMS, model_types={"B": "gemma3_text"},
                     log=lambda *a: None)
    src = tmp_path / "v.gguf"
    rng = np.random.default_rng(4)
    export_control_vector(src, {lay: rng.standard_normal(24).astype(np.float32) for lay in (2, 3)},
                          model_hint="llama")
    (out, carried), = transfer_files(ms, [src], tmp_path / "out", log=lambda *a: None)
    cv = repeng.ControlVector.import_gguf(str(out))
    assert cv.model_type == "gemma3_text"
    assert sorted(cv.directions) == [1, 2]
    for block, v in cv.directions.items():
        np.testing.assert_array_equal(np.asarray(v), carried.directions[block + 1])


def test_many_to_one_map_reads_a_stack_of_source_layers(tmp_path):
    """Target vectors that mix three source layers: the many-to-one map (the LRT paper's Appendix A objective)
    recovers them where any one source layer cannot; saved and loaded, it carries a multi-layer vector as
    its map of the stacked unit directions, and refuses a vector without the stack in one line; the CLI
    fits it and a mixture of runs too."""
    from stf_jax.transfer.fit import fit_mixture_map_set
    from stf_jax.transfer.mixture import Source

    pairs = shipped_pairs()
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    a = [unit(rng.standard_normal((len(pairs), 16))) for _ in range(6)]  # model A: 5 blocks, d 16
    mix = sum(a[lay] @ rng.standard_normal((16, 20)) for lay in (2, 3, 4))
    b = [unit(rng.standard_normal((len(pairs), 20))) for _ in range(6)]
    b[4] = unit(mix + 0.05 * rng.standard_normal(mix.shape))
    run = write_run(tmp_path / "run", pairs, {"A": a, "B": b})
    norms = {"A": {lay: 2.0 + lay for lay in range(6)}, "B": {lay: 10.0 * (1 + lay) for lay in range(6)}}
    m2o = fit_map_set(run, "A", "B", "many_to_one", 4, ridge=0.01, stack=3, norms=norms, log=lambda *x: None)
    one = fit_map_set(run, "A", "B", "affine", 4, ridge=0.01, norms=norms, log=lambda *x: None)
    lm = m2o.maps[4]
    assert lm.layers_source == (2, 3, 4) and lm.layer_source == 4  # the stack's member at the target's depth
    assert lm.header["quality"]["centered_cosine"] > 0.95 > 0.8 > one.maps[4].header["quality"]["centered_cosine"]
    loaded = load_map_set(m2o.save(tmp_path / "maps"))
    assert loaded.maps[4].layers_source == (2, 3, 4) and loaded.digest() == m2o.digest()
    v = {lay: rng.standard_normal(16).astype(np.float32) for lay in (1, 2, 3, 4)}
    got = carry(loaded, v)
    u = np.concatenate([v[lay] / np.linalg.norm(v[lay]) for lay in (2, 3, 4)])
    ref = np.asarray(loaded.maps[4].map(jnp.asarray(u)), np.float64)
    np.testing.assert_allclose(got.directions[4] / np.linalg.norm(got.directions[4]), ref / np.linalg.norm(ref),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got.directions[4]) / 50.0, np.linalg.norm(v[4]) / 6.0, rtol=1e-5)
    assert got.report["unmapped_source_layers"] == [1]
    with pytest.raises(TransferInputError, match=r"reads source layers \[2, 3, 4\] together"):
        carry(loaded, {4: v[4]})
    mixed = fit_mixture_map_set([Source(run), Source(run, 2.0)], "A", "B", 4, method="many_to_one", ridge=0.01,
                                stack=3, log=lambda *x: None)
    assert mixed.maps[4].layers_source == (2, 3, 4) and mixed.maps[4].header["settings"]["ridge"] == 0.01
    default = fit_mixture_map_set([Source(run)], "A", "B", 4, method="many_to_one", stack=3, log=lambda *x: None)
    assert default.maps[4].header["settings"]["ridge"] == 10.0  # the method's own default (wider inputs)
    cli = subprocess.run([sys.executable, "-m", "stf_jax.transfer", "fit", str(run), "--source", "A", "--target", "B",
                          "--method", "many_to_one", "--layers", "4", "--stack", "3", "--ridge", "0.01", "--no-norms",
                          "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "A L2+3+4 -> B L4: many_to_one" in cli.stderr, cli.stderr[-800:]
    bad = subprocess.run([sys.executable, "-m", "stf_jax.transfer", "fit", str(run), "--source", "A", "--target", "B",
                          "--method", "many_to_one", "--stack", "1", "--no-norms", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "stack" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_s2l_carries_through_the_source_sae(tmp_path):
    """Target vectors that depend on a source vector only through its k strongest SAE coefficients: s2l (the
    LRT paper's SAE-coefficients-to-states map) recovers them where an affine map on the states cannot; the
    map file holds the encoder (it loads and carries with the SAE gone) and equals affine(sparse_code(v));
    a mixture fits it too; an SAE of another width or model, or none, is one line."""
    import jax

    from stf_jax.align.maps import sparse_code
    from stf_jax.sae.model import SAEConfig, init_params
    from stf_jax.sae.saelens import save_sae
    from stf_jax.transfer.fit import fit_mixture_map_set
    from stf_jax.transfer.mixture import Source

    pairs = shipped_pairs()
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, model="A", layer=2)
    sae = init_params(cfg, jax.random.key(3))
    save_sae(tmp_path / "sae", cfg, sae)
    a = [unit(rng.standard_normal((len(pairs), 16))) for _ in range(4)]
    codes = np.asarray(sparse_code(jnp.asarray(a[2]), jnp.asarray(sae.W_enc), 4))
    b = [unit(rng.standard_normal((len(pairs), 20))) for _ in range(4)]
    b[2] = unit(codes @ rng.standard_normal((64, 20)))
    run = write_run(tmp_path / "run", pairs, {"A": a, "B": b})
    quiet = dict(ridge=0.001, log=lambda *x: None)
    s2l = fit_map_set(run, "A", "B", "s2l", 2, sae=tmp_path / "sae", **quiet)
    affine = fit_map_set(run, "A", "B", "affine", 2, **quiet)
    q, q_aff = (m.maps[2].header["quality"]["centered_cosine"] for m in (s2l, affine))
    assert q > 0.95 and q_aff < 0.8, (q, q_aff)
    saved = s2l.save(tmp_path / "maps")
    import shutil

    shutil.rmtree(tmp_path / "sae")
    loaded = load_map_set(saved)
    v = rng.standard_normal(16).astype(np.float32)
    got = carry(loaded, {2: v}, strength="unit").directions[2]
    lm = loaded.maps[2].map
    ref = np.asarray(lm.affine(sparse_code(jnp.asarray(v / np.linalg.norm(v)), lm.w_enc, 4)))
    np.testing.assert_allclose(got, ref / np.linalg.norm(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, carry(s2l, {2: v}, strength="unit").directions[2])
    save_sae(tmp_path / "sae", cfg, sae)
    mixed = fit_mixture_map_set([Source(run), Source(run, 3.0)], "A", "B", 2, method="s2l", sae=tmp_path / "sae",
                                **quiet)
    assert mixed.maps[2].map.w_enc.shape == (16, 64)
    save_sae(tmp_path / "wide", SAEConfig(d_in=8, d_sae=32, k=4, layer=2), init_params(SAEConfig(d_in=8, d_sae=32),
                                                                                      jax.random.key(0)))
    save_sae(tmp_path / "other", SAEConfig(d_in=16, d_sae=64, k=4, model="C", layer=2), sae)
    for extra, message in (([], "give --sae (train one"), (["--sae", tmp_path / "wide"], "reads 8-wide states"),
                           (["--sae", tmp_path / "other"], "trained on C, not A")):
        got = subprocess.run([sys.executable, "-m", "stf_jax.transfer", "fit", str(run), "--source", "A", "--target",
                              "B", "--method", "s2l", "--layers", "2", "--no-norms", "--out", str(tmp_path / "x"),
                              *map(str, extra)], capture_output=True, text=True, timeout=300)
        assert got.returncode == 2 and message in got.stderr and got.stderr.count("\n") == 1, got.stderr
