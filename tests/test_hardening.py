"""Issue 12, "nothing silently wrong, nothing lost": every bad input a one-line error (exit 2), safe file
names, locked and verified run directories, deterministic resume. One test (at least) per item of the
issue; each fails on the code before the fix (see the item numbers in the test names)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stf_jax.data import ContrastPair, PairFormatError, load_pairs, save_pairs
from stf_jax.errors import UserError
from stf_jax.extract import ExtractOptions, extract_pairs
from stf_jax.extract.store import DamagedRunError, load_layer, read_manifest

REPO = Path(__file__).resolve().parents[1]
TRAITS = ("formality", "verbosity")


def _pairs(n_per_trait: int = 4) -> list[ContrastPair]:
    out = []
    for trait in TRAITS:
        out += load_pairs("shipped", traits=[trait])[:n_per_trait]
    return out


def _opts(**kw) -> ExtractOptions:
    return ExtractOptions(**({"layers": "0,-1", "batch_size": 4, "chunk_size": 3, "progress": False} | kw))


def _quiet_extract(*args, **kw) -> str:
    """extract_pairs, returning what it printed on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        extract_pairs(*args, **kw)
    return err.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(module: str, *args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def llama(tiny_model_dir) -> str:
    return str(tiny_model_dir("llama_gqa_untied_rope3"))  # 4 blocks, context 2048


@pytest.fixture(scope="module")
def runs(tmp_path_factory, llama, tiny_model_dir):
    """Run A (tiny llama) and run B (tiny mistral) from the same pairs file, run C (mistral) from a file
    with the same ids and traits but each pair's texts swapped; the pairs file is then deleted (runs are
    self-contained). A stale lock (dead pid) is left in A's directory before it is extracted."""
    root = tmp_path_factory.mktemp("runs")
    pairs = _pairs()
    pfile = root / "pairs.jsonl"
    save_pairs(pairs, pfile)
    (root / "kept").mkdir()
    save_pairs(pairs, root / "kept" / "pairs.jsonl")  # an explicit copy (the runs must not need it)
    swapped = root / "swapped.jsonl"
    save_pairs([ContrastPair(p.id, p.trait, p.negative, p.positive, p.prompt) for p in pairs], swapped)
    mistral = str(tiny_model_dir("mistral_window"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / "A").mkdir()
    (root / "A" / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    logs = {"A": _quiet_extract([llama], load_pairs(pfile), root / "A", _opts(), dataset_name="pairs.jsonl"),
            "B": _quiet_extract([mistral], load_pairs(pfile), root / "B", _opts(), dataset_name="pairs.jsonl"),
            "C": _quiet_extract([mistral], load_pairs(swapped), root / "C", _opts(), dataset_name="swapped.jsonl")}
    pfile.unlink()
    swapped.unlink()
    return root, logs


# 1 ------------------------------------------------------------------------------------------- path traversal


def test_item01_safe_name_and_inside(tmp_path):
    from stf_jax.safe_paths import UnsafeNameError, UnsafePathError, inside, safe_name

    assert safe_name("formality") == "formality" and safe_name("smollm2-135m") == "smollm2-135m"
    hostile = ["../../../../X", "..", ".", "a/b", "a\\b", "x\x00y", "\nx", "/etc/passwd", ".hidden", "é" * 300]
    names = [safe_name(h) for h in hostile]
    assert len(set(names)) == len(names)  # never two names for one file
    for name in names:
        assert "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")
        assert name.isprintable() and len(name) <= 128
        assert inside(tmp_path, name).resolve().parent == tmp_path.resolve()
    for bad in ("", "  ", "\n"):
        with pytest.raises(UnsafeNameError):
            safe_name(bad)
    with pytest.raises(UnsafePathError, match="outside"):
        inside(tmp_path / "out", "../x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "out", "link/x")


def test_item01_hostile_trait_names_stay_inside_the_export_dir(tmp_path):
    """python -m stf_jax.experiment's export stage, given a trait named ../../../../X for two models: both files are
    written inside the export directory, under different names."""
    from stf_jax.experiment import _export

    root = tmp_path / "a" / "b" / "c" / "d" / "exp"
    run_dir, steer_dir, out = root / "extract", root / "steer", root / "export"
    run_dir.mkdir(parents=True)
    (steer_dir / "vectors").mkdir(parents=True)
    trait = "../../../../X"
    (run_dir / "manifest.json").write_text(json.dumps({"format_version": 1, "models": [
        {"name": "m1", "family": "llama"}, {"name": "m2", "family": "llama"}]}))
    directions = []
    for i, (src, tgt) in enumerate((("m2", "m1"), ("m1", "m2"))):
        np.savez(steer_dir / "vectors" / f"{i}.npz", **{f"native/{trait}": np.full(8, i + 1.0, np.float32)})
        directions.append({"source": src, "target": tgt, "vectors": f"vectors/{i}.npz", "conditions": ["native"],
                           "layer_source": 3, "layer_target": 3})
    (steer_dir / "steer_results.json").write_text(json.dumps({"directions": directions, "traits": [trait]}))
    written = _export(run_dir, steer_dir, out, {"format": "safetensors"}, log=lambda *a: None)
    assert len(written) == 2 and len({p.resolve() for p in written}) == 2
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in everything if not p.resolve().is_relative_to(root.resolve())]
    assert outside == []
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written)


# 2 --------------------------------------------------------------------- same ids, different texts


def test_item02_runs_from_different_texts_under_the_same_ids_are_refused(runs):
    from stf_jax.extract.rundir import AlignInputError, find_models, pair_table

    root, _ = runs
    refs = find_models([root / "A", root / "C"])
    with pytest.raises(AlignInputError, match=r"different texts under the same pair ids: 8 pair\(s\) differ"):
        pair_table(list(refs.values()), pairs=load_pairs(root / "kept" / "pairs.jsonl"))
    # the same check for runs without a copy of their texts (older runs): the dataset hashes differ
    for name in ("A", "C"):
        m = json.loads((root / name / "manifest.json").read_text())
        m.pop("pairs_file")
        (root / f"{name}_old").mkdir(exist_ok=True)
        shutil.copytree(root / name, root / f"{name}_old", dirs_exist_ok=True)
        (root / f"{name}_old" / "manifest.json").write_text(json.dumps(m))
    refs = find_models([root / "A_old", root / "C_old"])
    with pytest.raises(AlignInputError, match="different texts .*dataset hash"):
        pair_table(list(refs.values()), pairs=load_pairs(root / "kept" / "pairs.jsonl"))
    # the same texts are fine
    table, _ = pair_table(list(find_models([root / "A", root / "B"]).values()))
    assert table.n == 8


# 5 ------------------------------------------------------------------ identical texts, zero vectors


def test_item05_identical_texts_refused_and_zero_vectors_flagged_by_id(runs, llama, tmp_path):
    pairs = _pairs(2)
    same = ContrastPair("dup-1", "formality", "Same text.", "Same text.")
    with pytest.raises(UserError, match=r"same positive and negative text, e\.g\. \['dup-1'\]"):
        extract_pairs([llama], pairs + [same], tmp_path / "x", _opts())
    assert not (tmp_path / "x").exists()
    # layer 0 (embeddings, last token): pairs whose texts end in the same byte have a zero difference
    root, logs = runs
    manifest = read_manifest(root / "A")
    zero = manifest["models"][0]["flagged"]["zero_vectors"]["0"]
    arrays = load_layer(root / "A", llama, 0)
    norms = np.linalg.norm(arrays["diff"], axis=1)
    assert sorted(zero) == sorted(pid for pid, n in zip(manifest["pair_ids"], norms) if n == 0) and zero
    assert f"layer 0: {len(zero)} row(s) with a zero difference" in logs["A"] and zero[0] in logs["A"]


# 6, 11 -------------------------------------------------- kill and resume: byte-identical, whole-run stats


KILLER = textwrap.dedent("""
    import os, signal, sys
    import stf_jax.extract.driver as run
    save, n = run.atomic_save_tensors, [0]
    def killing_save(path, *args, **kw):
        digest = save(path, *args, **kw)
        if ".chunks" in str(path):
            n[0] += 1
            if n[0] == 2:
                os.kill(os.getpid(), signal.SIGKILL)   # a real SIGKILL, after the second chunk is on disk
        return digest
    run.atomic_save_tensors = killing_save
    from stf_jax.extract.__main__ import main
    main(sys.argv[1:])
""")


def test_item06_kill_and_resume_gives_byte_identical_files_and_whole_run_token_counts(llama, tmp_path):
    pfile = tmp_path / "pairs.jsonl"
    save_pairs(_pairs(4), pfile)
    args = ["--models", llama, "--pairs", str(pfile), "--layers", "1,-1", "--batch-size", "2", "--chunk-size", "3",
            "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args, "--out", str(tmp_path / "killed")], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    chunks = sorted((tmp_path / "killed" / ".chunks").rglob("chunk_*.safetensors"))
    assert len(chunks) == 2 and not (tmp_path / "killed" / "manifest.json").exists()
    assert (tmp_path / "killed" / ".lock").exists()  # left by the killed process: stale, taken over below

    from stf_jax.extract.__main__ import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        assert main([*args, "--out", str(tmp_path / "killed")]) == 0
        assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    assert "stale lock" in err.getvalue()
    assert out.getvalue().splitlines()[0].split(":")[1].split()[0] == str(2 * 8 - 2 * 6)  # 2 chunks not redone

    ref, resumed = _tree(tmp_path / "ref"), _tree(tmp_path / "killed")
    assert ref.keys() == resumed.keys()  # no chunk, lock or temporary file left behind
    differing = [f for f in ref if ref[f] != resumed[f]]
    assert differing == []  # every file byte-identical (sha256), manifest.json included
    m_ref, m_res = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("ref", "killed"))
    assert m_res == m_ref
    e_ref, e_res = m_ref["models"][0], m_res["models"][0]
    for key in ("real_tokens", "computed_tokens", "padding_efficiency"):
        assert e_res[key] == e_ref[key] and e_ref[key] > 0
    for rel, digest in m_ref["checksums"].items():
        assert resumed[rel] == digest


def test_item11_safetensors_headers_are_canonical(tmp_path):
    """The library writes the header's keys in an order that varies from process to process; ours are sorted
    (and compact), so the same arrays and metadata always give the same bytes."""
    import struct

    from stf_jax.core.atomic import atomic_save_tensors

    meta = {k: k.upper() for k in ("layer", "convention", "model", "trait", "alpha", "beta", "gamma", "delta")}
    tensors = {k: np.arange(6, dtype=np.float32) * i for i, k in enumerate(("vectors", "diff", "positive", "b"))}
    path = tmp_path / "x.safetensors"
    atomic_save_tensors(path, tensors, metadata=meta)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    assert list(header["__metadata__"]) == sorted(meta) and list(header) == sorted(header)
    assert raw[8:8 + n].rstrip() == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    from safetensors.numpy import load_file

    assert all(np.array_equal(load_file(str(path))[k], v) for k, v in tensors.items())


# 7 -------------------------------------------------------------------------------- damaged outputs


def test_item07_truncated_outputs_are_detected_recomputed_and_reported(llama, tmp_path):
    pairs = _pairs(2)
    out = tmp_path / "run"
    _quiet_extract([llama], pairs, out, _opts(layers="1,-1", chunk_size=8))
    before = _tree(out)
    layer_file = out / json.loads((out / "manifest.json").read_text())["models"][0]["files"]["4"]
    data = layer_file.read_bytes()
    layer_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedRunError, match=r"layer_004\.safetensors does not match its checksum"):
        load_layer(out, llama, 4)
    log = _quiet_extract([llama], pairs, out, _opts(layers="1,-1", chunk_size=8))  # not "already complete"
    assert "damaged" in log and "recomputing" in log
    after = _tree(out)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"}

    manifest = out / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    with pytest.raises(DamagedRunError, match=r"manifest\.json: manifest\.json is damaged"):
        read_manifest(out)
    log = _quiet_extract([llama], pairs, out, _opts(layers="1,-1", chunk_size=8))
    assert "recomputing" in log and read_manifest(out)["models"][0]["real_tokens"] > 0


# 8 ------------------------------------------------------------------------------------------- lock


def test_item08_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(runs, llama, tmp_path):
    from stf_jax.locks import DirLock, LockedError

    out = tmp_path / "run"
    with DirLock(out, "extraction"):  # held by this (live) process
        with pytest.raises(LockedError, match=rf"is being written by pid {os.getpid()} on .*delete .*\.lock"):
            extract_pairs([llama], _pairs(1), out, _opts())
    assert not (out / ".lock").exists()
    root, logs = runs  # run A was started over a stale lock of a dead process
    assert "stale lock" in logs["A"] and not (root / "A" / ".lock").exists()
    assert (root / "A" / "manifest.json").exists()


# 9 -------------------------------------------------------------------------------------- long texts


def test_item09_long_texts_are_cut_with_a_warning_and_batched_by_a_token_budget(llama, tmp_path, monkeypatch):
    from stf_jax.extract.batching import make_batches, rows_for_length, tokenize
    from stf_jax.models.loading import load_tokenizer

    from stf_jax.extract.driver import DEFAULT_MAX_LENGTH

    assert DEFAULT_MAX_LENGTH <= 2048  # not the model's context (8192-32768): one row's attention < 1 GB here
    long = ContrastPair("long-1", "verbosity", "word " * 20_000, "Short.")
    pairs = [ContrastPair(f"s-{i}", "formality", f"Hello there {i}.", f"Hi {i}.") for i in range(3)] + [long]
    log = _quiet_extract([llama], pairs, tmp_path / "run", _opts(layers="-1", max_length=256))
    assert "1 text(s) cut to 256 tokens: pair long-1 (positive) (100000 tokens)" in log
    entry = read_manifest(tmp_path / "run")["models"][0]
    assert entry["truncated"] == 1 and entry["max_length"] == 256

    tok = tokenize(load_tokenizer(Path(llama)), [p.positive for p in pairs] + [p.negative for p in pairs], 2048)
    rows_for = lambda seq: rows_for_length(seq, 32, 1, max_batch_tokens=4096, attention_budget=2**30, n_heads=4)
    batches = list(make_batches(tok, range(len(tok.ids)), 32, 2048, 0, rows_for=rows_for))
    assert max(b.input_ids.size for b in batches) <= 4096
    assert sorted(np.concatenate([b.rows[b.rows >= 0] for b in batches])) == list(range(len(tok.ids)))

    # an out-of-memory forward is the user's to fix: one line naming the batch and the options
    from stf_jax.extract import forward

    def exhausted(self, ids, mask):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 15.2GiB")

    monkeypatch.setattr(forward.PooledForward, "__call__", exhausted)
    with pytest.raises(UserError, match=r"out of memory on a batch of \d+x\d+ .*lower max_length="):
        _quiet_extract([llama], pairs, tmp_path / "oom", _opts(layers="-1", max_length=256))


# 10 ------------------------------------------------------------------------------------ non-UTF-8 input


def test_item10_non_utf8_files_name_the_file_and_line(tmp_path):
    from stf_jax.extract.inputs import read_corpus

    good = "".join(json.dumps(ContrastPair(i, "formality", "x y", "z w").to_dict()) + "\n" for i in "ab")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(good.encode() + b'{"id": "c", "trait": "t", "positive": "caf\xe9"}\n')
    with pytest.raises(PairFormatError, match=r"p\.jsonl:3: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        load_pairs(jsonl)
    csv = tmp_path / "p.csv"
    csv.write_bytes(b"id,trait,positive,negative\na,formality,x,y\nb,formality,\xff,z\n")
    with pytest.raises(PairFormatError, match=r"p\.csv:3: not UTF-8"):
        load_pairs(csv)
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"fine\nalso fine\n\x80bad\n")
    with pytest.raises(PairFormatError, match=r"c\.txt:3: not UTF-8"):
        read_corpus(corpus)


# 12 --------------------------------------------------------------------------------- GGUF conversion cache


def test_item12_failed_gguf_conversion_leaves_nothing_in_the_cache(tmp_path, monkeypatch, tiny_model_dir):
    from stf_jax.models import loading
    from stf_jax.models.loading import gguf_file

    monkeypatch.setenv("STF_JAX_CACHE", str(tmp_path / "cache"))
    hf = json.loads((Path(tiny_model_dir("llama_gqa_untied_rope3")) / "config.json").read_text())
    monkeypatch.setattr(gguf_file, "read_gguf", lambda path, progress=True: (dict(hf), {}, {}))  # no tokenizer data
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"GGUF")
    converted = tmp_path / "cache" / "converted"
    converted.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = converted / f"{loading._gguf_cache_dir(fake).name}.tmp{dead.pid}"  # a killed conversion's leftovers
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"0" * 1000)
    with pytest.raises(Exception):
        loading.convert_gguf(fake, progress=False)
    assert list(converted.iterdir()) == []


# 13 ---------------------------------------------------------------------------- self-contained run dirs


def test_item13_runs_work_from_any_directory_without_the_pairs_file(runs, tmp_path, monkeypatch):
    from stf_jax.align import EvalConfig, evaluate
    from stf_jax.extract.store import load_run_pairs

    root, _ = runs  # the pairs file they were extracted from is gone
    monkeypatch.chdir(tmp_path)
    cfg = EvalConfig(methods=("procrustes", "trait_mean"), k=2, variance=None, trials=1, scramble=())
    results = evaluate([root / "A", root / "B"], cfg, layer=-1, log=lambda *a: None)
    assert len(results["directions"]) == 2
    assert [p.id for p in load_run_pairs(root / "A")] == read_manifest(root / "A")["pair_ids"]
    tampered = tmp_path / "T"
    shutil.copytree(root / "A", tampered)
    with open(tampered / "pairs.jsonl", "a") as f:
        f.write("\n")
    with pytest.raises(DamagedRunError, match="pairs.jsonl does not match its checksum"):
        load_run_pairs(tampered)


# 14 ------------------------------------------------------------- every model checked before any work


def test_item14_arguments_are_checked_for_every_model_before_any_work(tiny_model_dir, llama, tmp_path):
    gemma3 = str(tiny_model_dir("gemma3_pattern"))  # 8 blocks; llama has 4
    out = tmp_path / "run"
    with pytest.raises(UserError, match=rf"layers=: layer 6 is out of range for {llama} with 4 blocks"):
        extract_pairs([gemma3, llama], _pairs(1), out, _opts(layers="6"))
    assert not out.exists()  # no files, no run_args.json: a corrected rerun is not refused
    with pytest.raises(UserError, match="has no chat template; drop chat_template="):
        extract_pairs([gemma3, llama], _pairs(1), out, _opts(chat_template=True))
    assert not out.exists()


# 15 ------------------------------------------------------------------------------------ prompt field


def test_item15_an_ignored_prompt_field_is_said(runs):
    _, logs = runs
    assert "note: 8 of 8 pairs have a 'prompt'; it is used only with --chat-template" in logs["A"]


# command lines -------------------------------------------------------------------------------------


def test_cli_expected_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(ContrastPair("a", "formality", "x y", "z w").to_dict()).encode() + b"\n\xff\n")
    r = _cli("stf_jax.extract", "--models", "smollm2-135m", "--pairs", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {bad}:2: not UTF-8 text (byte 0xff at column 1); save the file as UTF-8"], r.stderr
    assert "Traceback" in _cli("stf_jax.extract", "--models", "smollm2-135m", "--pairs", str(bad), "--out",
                               str(tmp_path / "o"), "--debug").stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text('{"format_version": 1, "mod')
    r = _cli("stf_jax.align", str(tmp_path / "run"), "--out", str(tmp_path / "al"), "--quiet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {tmp_path / 'run' / 'manifest.json'}: manifest.json is damaged"), r.stderr


# issue 25, point 8: library errors name arguments (layer=), the command lines show their flags (--layer)


def test_cli_message_turns_python_arguments_into_flags():
    from stf_jax.errors import cli_message, one_line

    assert cli_message("a .npy vector records no layer; give its HF layer (layer=)") == \
        "a .npy vector records no layer; give its HF layer (--layer)"
    assert cli_message("test_fraction= must be in (0, 1)") == "--test-fraction must be in (0, 1)"
    assert cli_message("layers=: layer 6 is out of range") == "--layers: layer 6 is out of range"
    assert cli_message("lower max_length= (now 256), max_batch_tokens= or batch_size=") == \
        "lower --max-length (now 256), --max-batch-tokens or --batch-size"
    assert cli_message("give both source= and target=, or neither") == "give both --source and --target, or neither"
    for kept in ("load it with dtype='bfloat16'", "write elsewhere, or replace=True", "cfg.layer= set",
                 "runs/x=y/file.npy", "a == b", "key=value", "Layer= (capitalised)"):
        assert cli_message(kept) == kept
    assert one_line(ValueError("first (layer=)\n  second k= ")) == "first (--layer) | second --k"


def test_a_library_error_names_the_argument_and_the_cli_its_flag(tmp_path):
    from stf_jax import SteeringVector
    from stf_jax.errors import SteeringInputError

    vec = tmp_path / "x.npy"
    np.save(vec, np.ones(576, np.float32))
    with pytest.raises(SteeringInputError, match=r"x\.npy: a \.npy vector records no layer; give its HF layer "
                                                 r"\(layer=\)$"):
        SteeringVector.load(vec)
    r = _cli("stf_jax.transfer", "apply", "--map", "shipped:smollm2-135m->gemma3-270m", str(vec),
             "--out", str(tmp_path / "carried"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {vec}: a .npy vector records no layer; give its HF layer (--layer)"], r.stderr
    assert not (tmp_path / "carried").exists()
