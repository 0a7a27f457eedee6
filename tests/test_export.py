"""Control-vector export/import: the files hold exactly what was written, under llama.cpp's naming.

Files are read back with gguf.GGUFReader / safetensors directly (not only through our loader), so a
wrong layer offset, dtype or missing key fails here rather than in llama.cpp.
"""

import argparse
import json

import gguf
import numpy as np
import pytest
from safetensors import safe_open

import stf_jax
from stf_jax.core.atomic import atomic_save_tensors, atomic_write_json
from stf_jax.extract.store import FORMAT_VERSION
from stf_jax.core.vectorfile import read_control_vector as load_control_vector, write_vector_file as export_control_vector
from stf_jax.steer.export_cli import add_export_parser, run_export
from stf_jax.steer.vectors import load_steering_vector

D = 48
CONVENTION = "hf_hidden_states_index: direction.i steers hidden_states[i+1] (output of block i)"
STF_KEYS = {f"stf_jax.{k}" for k in ("layer_convention", "operation", "source_model", "target_model",
                                     "transfer_method", "trait", "scale", "normalization", "norms", "d_model",
                                     "format_version", "version")}


def random_directions(layers, d=D, seed=0, unit=False):
    rng = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        v = rng.standard_normal(d).astype(np.float32) * np.float32(rng.uniform(0.5, 4.0))
        out[layer] = (v / np.linalg.norm(v)).astype(np.float32) if unit else v
    return out


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def test_gguf_round_trip(tmp_path):
    dirs = random_directions([2, 7, 13])
    out = export_control_vector(tmp_path / "v.gguf", dirs, model_hint="gemma3",
                                metadata={"source_model": "gemma3-270m", "stf_jax.trait": "verbosity"})
    assert out == tmp_path / "v.gguf" and not list(tmp_path.glob(".*tmp*"))

    fields, tensors = read_gguf(out)
    assert fields["general.architecture"].contents() == "controlvector"
    assert fields["controlvector.model_hint"].contents() == "gemma3"
    assert fields["controlvector.layer_count"].contents() == 3
    assert fields["controlvector.layer_count"].types == [gguf.GGUFValueType.UINT32]
    assert list(tensors) == ["direction.1", "direction.6", "direction.12"]  # HF layer L -> direction.{L-1}
    for layer, v in dirs.items():
        t = tensors[f"direction.{layer - 1}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [D] and t.n_elements == D
        assert np.array_equal(np.asarray(t.data), v)
    stf = {k: f.contents() for k, f in fields.items() if k.startswith("stf_jax.")}
    assert set(stf) == STF_KEYS
    assert all(fields[k].types == [gguf.GGUFValueType.STRING] for k in STF_KEYS)
    assert stf["stf_jax.layer_convention"] == CONVENTION
    assert (stf["stf_jax.operation"], stf["stf_jax.source_model"], stf["stf_jax.target_model"],
            stf["stf_jax.transfer_method"], stf["stf_jax.trait"]) == \
        ("additive", "gemma3-270m", "gemma3-270m", "native", "verbosity")
    assert stf["stf_jax.normalization"] == "none" and stf["stf_jax.d_model"] == str(D)
    assert stf["stf_jax.version"] == stf_jax.__version__
    norms = json.loads(stf["stf_jax.norms"])
    assert set(norms) == {"2", "7", "13"}
    for layer, v in dirs.items():
        assert norms[str(layer)] == pytest.approx(float(np.linalg.norm(v)), rel=1e-5)

    cv = load_control_vector(out)
    assert cv.layers == [2, 7, 13] and cv.d_model == D and cv.model_hint == "gemma3"
    for layer, v in dirs.items():
        assert cv.directions[layer].dtype == np.float32 and np.array_equal(cv.directions[layer], v)
    assert {k: v for k, v in cv.metadata.items() if k.startswith("stf_jax.")} == stf
    assert cv.metadata["controlvector.layer_count"] == "3"


def test_repeng_style_gguf_loads(tmp_path):
    """A file written as repeng's export_gguf writes it (no stf_jax keys, unsorted layers) loads."""
    blocks = random_directions([5, 3], seed=1)  # repeng keys: 0-based block index
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", len(blocks))
    for block, v in blocks.items():
        writer.add_tensor(f"direction.{block}", v)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    cv = load_control_vector(path)
    assert cv.layers == [4, 6] and cv.model_hint == "llama"
    assert np.array_equal(cv.directions[6], blocks[5]) and np.array_equal(cv.directions[4], blocks[3])
    assert not any(k.startswith("stf_jax.") for k in cv.metadata)
    vector, layer = load_steering_vector(path, layer=6)
    assert layer == 6
    np.testing.assert_allclose(vector, blocks[5] / np.linalg.norm(blocks[5]), rtol=1e-6)


def test_safetensors_round_trip(tmp_path):
    dirs = random_directions([1, 4], unit=True)  # HF layer 1 (direction.0) is fine outside llama.cpp
    meta = {"source_model": "smollm2-135m", "target_model": "gemma3-270m", "transfer_method": "procrustes",
            "trait": "formality", "run": "runs/extract/x"}
    path = export_control_vector(tmp_path / "v.safetensors", dirs, model_hint="gemma3", metadata=meta)

    with safe_open(str(path), "numpy") as f:
        names, file_meta = sorted(f.keys()), f.metadata()
        raw = {n: f.get_tensor(n) for n in names}
    assert names == ["direction.0", "direction.3"]
    assert raw["direction.0"].dtype == np.float32 and raw["direction.0"].shape == (D,)
    assert np.array_equal(raw["direction.0"], dirs[1]) and np.array_equal(raw["direction.3"], dirs[4])
    assert file_meta["general.architecture"] == "controlvector"
    assert file_meta["controlvector.model_hint"] == "gemma3" and file_meta["controlvector.layer_count"] == "2"
    assert STF_KEYS | {"stf_jax.run"} == {k for k in file_meta if k.startswith("stf_jax.")}
    assert file_meta["stf_jax.layer_convention"] == CONVENTION
    assert (file_meta["stf_jax.source_model"], file_meta["stf_jax.target_model"],
            file_meta["stf_jax.transfer_method"], file_meta["stf_jax.trait"], file_meta["stf_jax.run"]) == \
        ("smollm2-135m", "gemma3-270m", "procrustes", "formality", "runs/extract/x")
    assert file_meta["stf_jax.normalization"] == "unit"

    cv = load_control_vector(path)
    assert cv.layers == [1, 4] and cv.model_hint == "gemma3" and cv.metadata == file_meta
    assert all(np.array_equal(cv.directions[k], v) for k, v in dirs.items())


@pytest.mark.parametrize("suffix", [".gguf", ".safetensors"])
def test_load_steering_vector_exported(tmp_path, suffix):
    single = random_directions([9], seed=2)[9]
    path = export_control_vector(tmp_path / f"one{suffix}", {9: single}, model_hint="llama",
                                 metadata={"trait": "verbosity"})
    vector, layer = load_steering_vector(path)
    assert layer == 9 and vector.dtype == np.float32 and vector.shape == (D,)
    np.testing.assert_allclose(vector, single / np.linalg.norm(single), rtol=1e-6, atol=1e-7)
    assert load_steering_vector(path, "verbosity")[1] == 9
    with pytest.raises(ValueError, match="trait 'verbosity', not 'formality'"):
        load_steering_vector(path, "formality")

    multi = random_directions([2, 5], seed=3)
    mpath = export_control_vector(tmp_path / f"multi{suffix}", multi, model_hint="llama")
    vector, layer = load_steering_vector(mpath, layer=5)
    assert layer == 5
    np.testing.assert_allclose(vector, multi[5] / np.linalg.norm(multi[5]), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"HF layers \[2, 5\]; pick one with layer="):
        load_steering_vector(mpath)
    with pytest.raises(ValueError, match=r"no direction for HF layer 3 \(direction.2\)"):
        load_steering_vector(mpath, layer=3)


def make_run(root, rows, traits, layer=13, slug="gemma3-270m", family="gemma3"):
    """A finished pairs run as stf_jax/extract/driver.py leaves it: manifest + <slug>/layer_<idx>.safetensors."""
    rel = f"{slug}/layer_{layer:03d}.safetensors"
    (root / slug).mkdir(parents=True)
    diff = rows * 3.0
    atomic_save_tensors(root / rel, {"positive": diff, "negative": np.zeros_like(diff), "diff": diff,
                                     "vectors": rows},
                        metadata={"layer": str(layer), "convention": "hf_hidden_states"})
    atomic_write_json(root / "manifest.json", {
        "format_version": FORMAT_VERSION, "kind": "pairs",
        "models": [{"name": slug, "slug": slug, "family": family, "n_layers": 18, "d_model": rows.shape[1],
                    "layers": [layer], "files": {str(layer): rel}}],
        "pair_ids": [f"p{i}" for i in range(len(traits))], "traits": traits})
    return root / rel


def cli(argv):
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.command == "export"
    return run_export(args)


def test_cli_export_from_run(tmp_path, capsys):
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((5, D)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    traits = ["verbosity", "formality", "verbosity", "formality", "verbosity"]
    layer_file = make_run(tmp_path / "run", rows, traits)
    expected = rows[[0, 2, 4]].mean(axis=0)
    expected /= np.linalg.norm(expected)

    out = tmp_path / "exports" / "verbosity.gguf"
    # --scale unit: this fake run's model is not loadable to measure its |h| (the default's strength)
    assert cli(["export", "--vector", str(layer_file), "--trait", "verbosity", "--out", str(out), "--scale",
                "unit"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "direction.12" in printed and f"d_model {D}" in printed and "1.0000" in printed

    fields, tensors = read_gguf(out)
    assert list(tensors) == ["direction.12"]
    np.testing.assert_allclose(np.asarray(tensors["direction.12"].data), expected, rtol=1e-6, atol=1e-7)
    stf = {k: f.contents() for k, f in fields.items()}
    assert stf["controlvector.model_hint"] == "gemma3"  # the manifest's family
    assert (stf["stf_jax.source_model"], stf["stf_jax.target_model"], stf["stf_jax.transfer_method"],
            stf["stf_jax.trait"], stf["stf_jax.normalization"]) == \
        ("gemma3-270m", "gemma3-270m", "native", "verbosity", "unit")
    # the exported file steers with the same vector the run file gives
    run_vector, run_layer = load_steering_vector(layer_file, "verbosity")
    assert run_layer == 13 and np.array_equal(load_steering_vector(out)[0], run_vector)
    with pytest.raises(ValueError, match="holds HF layer 13, not 12"):
        load_steering_vector(layer_file, "verbosity", layer=12)

    # exported .gguf -> .safetensors keeps the recorded models and trait; a transfer needs its method
    st = tmp_path / "exports" / "verbosity.safetensors"
    assert cli(["export", "--vector", str(out), "--out", str(st)]) == 0
    cv = load_control_vector(st)
    assert cv.model_hint == "gemma3" and cv.metadata["stf_jax.trait"] == "verbosity"
    assert np.array_equal(cv.directions[13], np.asarray(tensors["direction.12"].data))
    assert cli(["export", "--vector", str(out), "--out", str(st), "--target-model", "gemma3-1b"]) == 2
    assert "transfer_method" in capsys.readouterr().err


def test_cli_npy(tmp_path, capsys):
    v = random_directions([1], seed=5)[1]
    np.save(tmp_path / "v.npy", v)
    out = tmp_path / "v.safetensors"
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(out), "--model-hint", "llama"]) == 2
    assert "--layer" in capsys.readouterr().err
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(out), "--layer", "7"]) == 2
    assert "--model-hint" in capsys.readouterr().err
    assert not out.exists()
    # a vector that does not fit the named target model is refused (issue 12, item 3): 48 dims vs gemma3's 640
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(out), "--layer", "7",
                "--model-hint", "llama", "--source-model", "smollm2-135m", "--target-model", "gemma3-270m",
                "--method", "procrustes"]) == 2
    assert "d_model 640" in capsys.readouterr().err and not out.exists()
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(out), "--layer", "7",
                "--model-hint", "llama", "--source-model", "smollm2-135m", "--scale", "unit"]) == 0
    cv = load_control_vector(out)
    assert cv.layers == [7] and cv.model_hint == "llama"
    np.testing.assert_allclose(cv.directions[7], v / np.linalg.norm(v), rtol=1e-6, atol=1e-7)
    assert (cv.metadata["stf_jax.source_model"], cv.metadata["stf_jax.target_model"],
            cv.metadata["stf_jax.transfer_method"], cv.metadata["stf_jax.trait"]) == \
        ("smollm2-135m", "smollm2-135m", "native", "unknown")


def _nan():
    v = random_directions([3])[3]
    v[4] = np.nan
    return {3: v}


@pytest.mark.parametrize("name,dirs,match", [
    ("v.gguf", {1: np.ones(D, np.float32)}, r"direction\.0, which llama\.cpp rejects"),
    ("v.safetensors", {0: np.ones(D, np.float32)}, "embedding output"),
    ("v.gguf", {2: np.ones(D, np.float32), 3: np.ones(D + 1, np.float32)}, f"layer 3: d_model {D + 1} differs"),
    ("v.gguf", _nan(), "layer 3: the vector has 1 NaN/inf"),
    ("v.safetensors", {2: np.zeros(D, np.float32)}, "all zeros"),
    ("v.gguf", {2: np.ones((2, D), np.float32)}, r"shape \(2, 48\)"),
    ("v.bin", {2: np.ones(D, np.float32)}, r"unknown format '\.bin'"),
    ("v.npy", {2: np.ones(D, np.float32)}, r"\*\.gguf .* or \*\.safetensors"),
])
def test_export_errors(tmp_path, name, dirs, match):
    with pytest.raises(ValueError, match=match):
        export_control_vector(tmp_path / name, dirs, model_hint="llama")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_metadata_errors(tmp_path):
    v = {2: np.ones(D, np.float32)}
    with pytest.raises(ValueError, match="transfer_method"):
        export_control_vector(tmp_path / "v.gguf", v, model_hint="llama",
                              metadata={"source_model": "a", "target_model": "b"})
    with pytest.raises(ValueError, match="model_hint is empty"):
        export_control_vector(tmp_path / "v.gguf", v, model_hint="")
    with pytest.raises(ValueError, match="must be str"):
        export_control_vector(tmp_path / "v.gguf", v, model_hint="llama", metadata={"scale": 2.0})
    with pytest.raises(ValueError, match="normalization .* disagrees"):
        export_control_vector(tmp_path / "v.gguf", v, model_hint="llama", metadata={"normalization": "unit"})


def test_load_errors(tmp_path):
    model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(model), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.ones((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="model GGUF, not a control vector"):
        load_control_vector(model)
    with pytest.raises(ValueError, match="unknown format"):
        load_control_vector(tmp_path / "v.pt")
    rows = np.eye(3, D, dtype=np.float32)
    layer_file = make_run(tmp_path / "run", rows, ["a", "a", "b"])
    with pytest.raises(ValueError, match="extraction run's layer file"):
        load_control_vector(layer_file)


def test_default_export_works_at_strength_one(tmp_path, capsys):
    """A direction exported for a real model stores 0.15 x the layer's typical |h|, and says so, so llama.cpp's
    FILE:1 and repeng's set_control(v, 1) steer at stf_jax's default strength; a control-vector file keeps its
    stored length; with no model to measure |h| the file is unit length and says that instead."""
    import json

    from stf_jax.core.norms import typical_norms
    from stf_jax.data import load_pairs
    from stf_jax.models.loading import load_model

    v = np.random.default_rng(3).standard_normal(576).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    out = tmp_path / "v.gguf"
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(out), "--layer", "20",
                "--model-hint", "llama", "--source-model", "smollm2-135m"]) == 0
    cv = load_control_vector(out)
    h = json.loads(cv.metadata["stf_jax.typical_norms"])["20"]
    texts = [t for p in load_pairs("shipped")[::89] for t in (p.positive, p.negative)]
    assert h == pytest.approx(typical_norms(load_model("smollm2-135m"), texts, [20])[20], rel=1e-5)
    assert np.linalg.norm(cv.directions[20]) == pytest.approx(0.15 * h, rel=1e-5) and 5 < h < 500
    assert cv.metadata["stf_jax.strength_source"] == "typical_norm_fraction"
    again = tmp_path / "again.safetensors"
    assert cli(["export", "--vector", str(out), "--out", str(again)]) == 0  # a control vector keeps its length
    np.testing.assert_array_equal(load_control_vector(again).directions[20], cv.directions[20])
    bare = tmp_path / "bare.gguf"
    assert cli(["export", "--vector", str(tmp_path / "v.npy"), "--out", str(bare), "--layer", "20",
                "--model-hint", "llama"]) == 0
    assert "no model to measure" in capsys.readouterr().err
    cvb = load_control_vector(bare)
    assert cvb.metadata["stf_jax.strength_source"] == "unit"
    assert np.linalg.norm(cvb.directions[20]) == pytest.approx(1.0, rel=1e-6)
