"""Extraction: vectors are right, identical across devices/processes, resumable after SIGKILL."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import stf_jax
from stf_jax.data import ContrastPair, load_pairs, save_pairs
from stf_jax.extract import ExtractOptions, extract_corpus, extract_pairs, parse_layer_spec, resolve_layers
from stf_jax.extract.batching import make_batches, tokenize
from stf_jax.extract.store import RunDirError

REPO = Path(__file__).resolve().parents[1]


def small_pairs(n_per_trait=3, traits=("formality", "politeness", "verbosity", "urgency")):
    pairs = load_pairs("shipped", traits=list(traits))
    keep, seen = [], {}
    for p in pairs:
        if seen.get(p.trait, 0) < n_per_trait:
            keep.append(p)
            seen[p.trait] = seen.get(p.trait, 0) + 1
    return keep


def run_files(out: Path) -> dict[str, dict[str, np.ndarray]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {f"{m['slug']}/{layer}": load_file(str(out / f)) for m in manifest["models"]
            for layer, f in m["files"].items()}


def test_layer_specs():
    assert resolve_layers(parse_layer_spec("-6"), 30) == (25,)
    assert resolve_layers(parse_layer_spec("0.67,0,-1"), 30) == (0, 20, 30)
    assert resolve_layers(parse_layer_spec("all"), 3) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"valid indices are -31\.\.30"):
        resolve_layers(parse_layer_spec("31"), 30)
    with pytest.raises(ValueError, match="not an index"):
        resolve_layers(parse_layer_spec("middle"), 30)


def test_buckets_bound_shapes_and_cover_every_text(tiny_model_dir):
    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(1, 300, size=203)]
    tok = tokenize(model.tokenizer, texts, max_length=256)
    assert tok.truncated == sum(len(t) > 256 for t in texts)
    batches = list(make_batches(tok, range(len(texts)), 16, 256, pad_id=0, row_multiple=2))
    rows = np.concatenate([b.rows[b.rows >= 0] for b in batches])
    assert sorted(rows) == list(range(len(texts)))
    assert len({b.input_ids.shape for b in batches}) <= 10
    assert sum(b.real_tokens for b in batches) / sum(b.computed_tokens for b in batches) > 0.75
    with pytest.raises(ValueError, match="more than the model's context of 256"):
        tokenize(model.tokenizer, texts, max_length=256, truncate=False)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_vectors_match_direct_forward(tiny_model_dir, tmp_path, pooling):
    model_dir = tiny_model_dir("gemma3_pattern")
    pairs = small_pairs()
    opts = ExtractOptions(layers="-2,3", pooling=pooling, batch_size=4, chunk_size=5, progress=False)
    extract_pairs([str(model_dir)], pairs, tmp_path / "run", opts)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["pair_ids"] == [p.id for p in pairs] and manifest["traits"] == [p.trait for p in pairs]
    entry = manifest["models"][0]
    assert entry["layers"] == [3, 7] and entry["config_hash"] and entry["dtype"] == "float32"
    from stf_jax.extract.store import load_layer

    by_spec = load_layer(tmp_path / "run", entry["slug"], -2)  # the store resolves specs with the one layer parser
    assert all(np.array_equal(by_spec[k], v) for k, v in load_layer(tmp_path / "run", entry["name"], 7).items())

    model = stf_jax.load_model(model_dir)
    for layer in (3, 7):
        arrays = load_file(str(tmp_path / "run" / entry["files"][str(layer)]))
        for side in ("positive", "negative"):
            texts = [getattr(p, side) for p in pairs]
            ids, mask = model.encode(texts, padding_side="right")
            h = np.asarray(model.hidden_states(ids, mask, [layer]))[0]
            if pooling == "last":
                ref = h[np.arange(len(texts)), mask.sum(1) - 1]
            else:
                ref = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            np.testing.assert_allclose(arrays[side], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        diff = arrays["positive"] - arrays["negative"]
        np.testing.assert_allclose(arrays["diff"], diff, rtol=1e-6)
        np.testing.assert_allclose(arrays["vectors"], diff / np.linalg.norm(diff, axis=1, keepdims=True), rtol=1e-5)


def test_rerun_with_other_arguments_is_refused(tiny_model_dir, tmp_path):
    model_dir = str(tiny_model_dir("llama_gqa_untied_rope3"))
    pairs = small_pairs(2)
    extract_pairs([model_dir], pairs, tmp_path / "run", ExtractOptions(layers="1", progress=False))
    assert extract_pairs([model_dir], pairs, tmp_path / "run", ExtractOptions(layers="1", progress=False)) == []
    with pytest.raises(RunDirError, match="differs in: layers.*overwrite="):
        extract_pairs([model_dir], pairs, tmp_path / "run", ExtractOptions(layers="2", progress=False))
    extract_pairs([model_dir], pairs, tmp_path / "run", ExtractOptions(layers="2", progress=False, overwrite=True))
    assert [key.split("/")[1] for key in run_files(tmp_path / "run")] == ["2"]


def test_corpus_token_mode(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("mistral_window")
    texts = ["short text", "a somewhat longer text " * 8, "mid length text here"]
    opts = ExtractOptions(layers="2", progress=False, max_tokens_per_text=20, chunk_size=2)
    extract_corpus([str(model_dir)], texts, tmp_path / "tok", opts)
    arrays = next(iter(run_files(tmp_path / "tok").values()))
    model = stf_jax.load_model(model_dir)
    lengths = [len(model.tokenizer(t)["input_ids"]) for t in texts]
    counts = np.bincount(arrays["text_index"], minlength=3)
    assert list(counts) == [min(n, 20) for n in lengths]
    ids, mask = model.encode(texts[1:2])
    h = np.asarray(model.hidden_states(ids, mask, [2]))[0, 0]
    sel = arrays["text_index"] == 1
    np.testing.assert_allclose(arrays["states"][sel], h[arrays["token_index"][sel]], rtol=1e-5, atol=1e-5)


def _cli(args, env=None, **kw):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "stf_jax.extract", *args, "--no-progress"], env=env,
                          capture_output=True, text=True, cwd=REPO, **kw)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    save_pairs(small_pairs(4), path)
    return path


def _single_run(tiny_model_dir, pairs_file, tmp_path):
    model_dir = str(tiny_model_dir("gemma2_softcap"))
    out = tmp_path / "single"
    r = _cli(["--models", model_dir, "--pairs", str(pairs_file), "--layers", "-2", "--batch-size", "4",
              "--chunk-size", "4", "--out", str(out)], env={"XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    return model_dir, run_files(out)


def test_four_devices_equal_one(tiny_model_dir, pairs_file, tmp_path):
    model_dir, single = _single_run(tiny_model_dir, pairs_file, tmp_path)
    for extra in ([], ["--model-parallel", "2"]):
        out = tmp_path / f"four{len(extra)}"
        r = _cli(["--models", model_dir, "--pairs", str(pairs_file), "--layers", "-2", "--batch-size", "4",
                  "--chunk-size", "4", "--out", str(out), *extra],
                 env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
        assert r.returncode == 0, r.stderr[-2000:]
        multi = run_files(out)
        for key in single:
            np.testing.assert_allclose(multi[key]["vectors"], single[key]["vectors"], rtol=1e-5, atol=1e-6)


def test_two_processes_equal_single_process(tiny_model_dir, pairs_file, tmp_path):
    model_dir, single = _single_run(tiny_model_dir, pairs_file, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "multi"
    args = ["--models", model_dir, "--pairs", str(pairs_file), "--layers", "-2", "--batch-size", "4",
            "--chunk-size", "4", "--out", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, "-m", "stf_jax.extract", *args, "--process-id", str(i), "--no-progress"],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    multi = run_files(out)
    assert multi.keys() == single.keys()
    for key in single:
        for name in ("positive", "negative", "vectors"):
            np.testing.assert_allclose(multi[key][name], single[key][name], rtol=1e-5, atol=1e-6)


def test_malformed_pairs_file_reports_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ContrastPair("a", "formality", "x y", "z w").to_dict()) + "\n{not json\n")
    r = _cli(["--models", "smollm2-135m", "--pairs", str(bad), "--out", str(tmp_path / "o")])
    assert r.returncode != 0 and "bad.jsonl:2" in r.stderr


def test_commands_compile_once_per_machine(tiny_model_dir, pairs_file, tmp_path):
    """Every command turns JAX's persistent compilation cache on (core.compile_cache): the first run writes
    programs to the cache directory, a second run of the same shapes writes none and gives identical files;
    STF_JAX_COMPILE_CACHE=off turns it off."""
    model_dir = str(tiny_model_dir("llama_gqa_untied_rope3"))
    cache = tmp_path / "xla"
    env = {"STF_JAX_COMPILE_CACHE": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env_off = {**env, "STF_JAX_COMPILE_CACHE": "off"}
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    args = ["--models", model_dir, "--pairs", str(pairs_file), "--layers", "-2", "--batch-size", "4"]
    first = _cli([*args, "--out", str(tmp_path / "a")], env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote no compiled program"
    second = _cli([*args, "--out", str(tmp_path / "b")], env=env)
    assert second.returncode == 0 and sorted(p.name for p in cache.iterdir()) == entries  # all hits
    off = _cli([*args, "--out", str(tmp_path / "c")], env={**env_off, "STF_JAX_CACHE": str(tmp_path / "other")})
    assert off.returncode == 0 and not (tmp_path / "other").exists()
    ref = run_files(tmp_path / "a")
    for name in ("b", "c"):
        got = run_files(tmp_path / name)
        assert got.keys() == ref.keys()
        for key in ref:
            for array in ref[key]:
                np.testing.assert_array_equal(got[key][array], ref[key][array])


def test_compile_cache_settings(monkeypatch, tmp_path):
    from stf_jax.core import compile_cache

    monkeypatch.setenv("STF_JAX_COMPILE_CACHE", "off")
    assert compile_cache.cache_path() is None and compile_cache.enable() is None
    monkeypatch.setenv("STF_JAX_COMPILE_CACHE", str(tmp_path / "c"))
    assert compile_cache.cache_path() == tmp_path / "c"
    monkeypatch.delenv("STF_JAX_COMPILE_CACHE")
    monkeypatch.setenv("STF_JAX_CACHE", str(tmp_path / "root"))
    assert compile_cache.cache_path() == tmp_path / "root" / "xla"


def test_xla_cpu_defaults(monkeypatch):
    """The extraction command turns XLA:CPU's YNNPACK fusions off where jaxlib knows the flag (core.xla_flags):
    a dot then compiles to XLA's own dot, not a YNN fusion. Importing stf_jax leaves them on (generation needs
    them); a user's own setting wins; off leaves XLA_FLAGS alone."""
    from stf_jax.core import xla_flags

    dot = ("import jax, jax.numpy as jnp; "
           "print(jax.jit(lambda a: a @ a).lower(jnp.ones((256, 256))).compile().as_text().count('ynn_fusion'))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "STF_JAX_XLA_CPU_DEFAULTS")}
    fused = {}
    for name, code, extra in (("extract", "from stf_jax.core.xla_flags import cpu_defaults; cpu_defaults(); ", {}),
                              ("import", "import stf_jax; ", {}),
                              ("off", "from stf_jax.core.xla_flags import cpu_defaults; cpu_defaults(); ",
                               {"STF_JAX_XLA_CPU_DEFAULTS": "off"})):
        r = subprocess.run([sys.executable, "-c", code + dot], env={**env, **extra}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        fused[name] = int(r.stdout.split()[-1])
    if xla_flags._jaxlib_version() and xla_flags.KNOWN[0] <= xla_flags._jaxlib_version() < xla_flags.KNOWN[1]:
        assert fused["extract"] == 0 < fused["import"] == fused["off"]
    assert "cpu_defaults()" in (REPO / "stf_jax" / "extract" / "__main__.py").read_text()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert xla_flags.cpu_defaults() is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (0, 9, 0))  # a jaxlib without the flag: none added
    assert xla_flags.cpu_defaults() is None and os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (0, 10, 2))
    assert xla_flags.cpu_defaults() == xla_flags.YNN_OFF
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {xla_flags.YNN_OFF}"
