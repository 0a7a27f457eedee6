"""Hostile inputs, round two: the memory bombs are refused at once and in little memory, option ranges are one
rule for a call, a flag and a YAML key, and a vector made for another model is not carried silently."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from stf_jax.errors import UserError

SHIPPED = "shipped:smollm2-135m->gemma3-270m"


def gguf_bomb(path, count: int = 1 << 62):
    """128 bytes: GGUF v3, no tensors, one key whose UINT8 array claims `count` entries."""
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, count)
    path.write_bytes(data + b"\0" * (128 - len(data)))
    return path


LAUGHS = "name: lol\nmodels: [a, b]\n" + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "extract: *i\n"


def _child(code: str, limit_bytes: int = 2 << 30) -> tuple[subprocess.CompletedProcess, float]:
    """Run `code` in a fresh interpreter under an address-space cap; it prints its own peak RSS (MB) last."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    # VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's over the exec)
    peak = "[int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024"
    wrapped = (f"try:\n" + "".join(f"    {line}\n" for line in code.splitlines())
               + f"finally:\n    print('peak_mb', {peak})\n")
    t0 = time.perf_counter()
    got = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, preexec_fn=cap, timeout=60)
    return got, time.perf_counter() - t0


def _peak_mb(out: str) -> float:
    return float(out.strip().splitlines()[-1].split()[1])


def test_gguf_bomb_is_refused_at_once_in_little_memory(tmp_path):
    bomb = gguf_bomb(tmp_path / "bomb.gguf")
    got, seconds = _child(f"from stf_jax import SteeringVector\nfrom stf_jax.errors import UserError\n"
                          f"try:\n    SteeringVector.load({str(bomb)!r})\nexcept UserError as e:\n    print('refused', e)")
    assert got.returncode == 0, got.stderr
    assert "refused" in got.stdout and "not a valid GGUF file" in got.stdout and "bytes left" in got.stdout
    assert seconds < 5 and _peak_mb(got.stdout) < 200, (seconds, got.stdout)  # the scan itself: ~0.3 s, ~40 MB


def test_gguf_bomb_through_the_cli_is_one_line(tmp_path):
    """`transfer apply` reads its inputs before it imports JAX or loads the maps: the whole command refuses the
    bomb in a fraction of a second and ~40 MB (measured 0.15 s, 38 MB)."""
    bomb = gguf_bomb(tmp_path / "bomb.gguf", count=1 << 40)
    got, seconds = _child("import runpy, sys\n"
                          f"sys.argv = ['x', 'apply', '--map', {SHIPPED!r}, {str(bomb)!r}, '--out', "
                          f"{str(tmp_path / 'out')!r}]\n"
                          "try:\n    runpy.run_module('stf_jax.transfer', run_name='__main__')\n"
                          "except SystemExit as e:\n    print('exit', e.code, 'jax' in sys.modules)")
    assert "exit 2 False" in got.stdout, (got.stdout, got.stderr)
    assert got.stderr.count("\n") == 1 and "not a valid GGUF file" in got.stderr, got.stderr
    assert seconds < 5 and _peak_mb(got.stdout) < 200, (seconds, got.stdout)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_every_probe_of_the_second_round(tmp_path):
    """scripts/probe_hostile.py: each probe issue 26 listed, as a real command (exit 2 and one line, or a
    correct result; nothing written). The read-only-filesystem probes need a mount and are left to the
    script run by hand."""
    got = subprocess.run([sys.executable, "scripts/probe_hostile.py", "--no-mount"], capture_output=True, text=True,
                         timeout=900)
    assert got.returncode == 0 and "probes pass" in got.stdout, got.stdout[-4000:] + got.stderr[-2000:]


@pytest.mark.parametrize("case", ["array of strings", "tensor count", "dimensions", "truncated key"])
def test_gguf_scan_refuses_declared_sizes_the_file_cannot_hold(tmp_path, case):
    from stf_jax.core.gguf_check import GGUFFormatError, check_gguf

    head = {"array of strings": struct.pack("<QQ", 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 8, 1 << 50),
            "tensor count": struct.pack("<QQ", 1 << 40, 0),
            "dimensions": struct.pack("<QQ", 1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 9),
            "truncated key": struct.pack("<QQ", 0, 1) + struct.pack("<Q", 1 << 20) + b"abc"}[case]
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + head + b"\0" * 64)
    with pytest.raises(GGUFFormatError, match="not a valid GGUF file"):
        check_gguf(path)


def test_real_gguf_files_pass_the_scan(tmp_path):
    from stf_jax import SteeringVector
    from stf_jax.core.gguf_check import check_gguf

    path = SteeringVector({3: np.ones(16, np.float32)}, model_type="llama", trait="x").save(tmp_path / "v.gguf")
    check_gguf(path)
    assert SteeringVector.load(path).layers == [3]


def test_yaml_aliases_are_refused_before_expansion(tmp_path):
    config = tmp_path / "laughs.yaml"
    config.write_text(LAUGHS)
    got, seconds = _child(f"from stf_jax.experiment import load_experiment, check_experiment\n"
                          f"from stf_jax.errors import UserError\n"
                          f"try:\n    check_experiment(load_experiment({str(config)!r}))\n"
                          f"except UserError as e:\n    print('refused', e)")
    assert got.returncode == 0, got.stderr
    assert "refused" in got.stdout and "aliases are not allowed" in got.stdout
    assert seconds < 5 and _peak_mb(got.stdout) < 200, (seconds, got.stdout)
    cli = subprocess.run([sys.executable, "-m", "stf_jax.experiment", str(config)], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "alias *a" in cli.stderr


def test_yaml_non_finite_numbers_are_refused():
    from stf_jax.core.yamlfile import ConfigFileError, load_yaml

    assert load_yaml("a: [1, 2.5, x]") == {"a": [1, 2.5, "x"]}
    with pytest.raises(ConfigFileError, match=r"steer.alphas\[1\] is inf"):
        load_yaml("steer: {alphas: [0.1, .inf]}", "c.yaml")


@pytest.mark.parametrize("field,value,problem", [("batch_size", 0, "must be >= 1"),
                                                 ("batch_size", 2.5, "must be an integer"),
                                                 ("batch_size", "1e400", "must be an integer"),
                                                 ("max_length", -3, "must be >= 1"),
                                                 ("seed", True, "must be an integer")])
def test_one_option_rule_for_a_call_and_a_yaml_key(tmp_path, field, value, problem):
    from stf_jax.experiment import check_experiment, load_experiment
    from stf_jax.extract.driver import ExtractOptions
    from stf_jax.options import OptionError

    with pytest.raises(OptionError, match=f"{field}= {problem}"):
        ExtractOptions(**{field: value})
    config = tmp_path / "c.yaml"
    shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
    config.write_text(f"name: x\nmodels: [smollm2-135m, gemma3-270m]\nextract: {{{field}: {shown}}}\n")
    with pytest.raises(UserError, match=f"extract.{field} {problem}"):
        check_experiment(load_experiment(config))


def test_option_ranges_reach_the_command_line(tmp_path):
    """align's --test-fraction 1.5 is the EvalConfig rule, shown as the flag (one line, exit 2)."""
    got = subprocess.run([sys.executable, "-m", "stf_jax.align", str(tmp_path), "--test-fraction", "1.5", "--out",
                          str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert got.returncode == 2 and got.stderr.count("\n") == 1, got.stderr
    assert "--test-fraction must be < 1" in got.stderr


@pytest.mark.parametrize("probe", ["complex", "object", "2-D", "huge header"])
def test_npy_vectors_that_are_not_one_real_vector_are_refused(tmp_path, probe):
    from stf_jax import SteeringVector

    path = tmp_path / "v.npy"
    if probe == "complex":
        np.save(path, np.ones(8, np.complex64))
    elif probe == "object":
        np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif probe == "2-D":
        np.save(path, np.ones((2, 8), np.float32))
    else:  # a header declaring 2^40 floats over 64 bytes of data
        np.save(path, np.ones(16, np.float32))
        raw = path.read_bytes().replace(b"(16,)", b"(1099511627776,)".ljust(5))
        path.write_bytes(raw)
    with pytest.raises(UserError):
        SteeringVector.load(path, layer=3)


def test_a_vector_for_another_model_is_not_carried_unless_forced(tmp_path):
    import stf_jax

    maps = stf_jax.load_map(SHIPPED)
    layer = sorted({lm.layer_source for lm in maps.maps.values()})[0]
    rng = np.random.default_rng(0)
    gemma = stf_jax.SteeringVector({layer: rng.standard_normal(576).astype(np.float32)}, model_type="gemma3_text")
    with pytest.raises(UserError, match="model hint is 'gemma3_text'.*force="):
        stf_jax.transfer(gemma, maps)
    assert stf_jax.transfer(gemma, maps, force=True).model == "gemma3-270m"
    other = gemma.replace(model="qwen2-0.5b", model_type="")
    with pytest.raises(UserError, match="made for 'qwen2-0.5b'"):
        stf_jax.transfer(other, maps)
    ok = gemma.replace(model_type="llama")  # smollm2's family, as a repeng file of it says
    assert stf_jax.transfer(ok, maps).layers
    path = gemma.save(tmp_path / "gemma_hint.gguf")
    got = subprocess.run([sys.executable, "-m", "stf_jax.transfer", "apply", "--map", SHIPPED, str(path), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and "--force" in got.stderr and got.stderr.count("\n") == 1, got.stderr


def test_os_conditions_on_user_paths_are_one_line(tmp_path):
    """An --out under a file (ENOTDIR) is the user's to fix: one line, exit 2; --debug keeps the traceback."""
    import stf_jax

    path = stf_jax.SteeringVector({20: np.ones(576, np.float32)}, model="smollm2-135m", model_type="llama").save(
        tmp_path / "v.gguf")
    (tmp_path / "file").write_text("x")
    cmd = [sys.executable, "-m", "stf_jax.transfer", "apply", "--map", SHIPPED, str(path), "--out",
           str(tmp_path / "file" / "out")]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "Not a directory" in got.stderr, got.stderr
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_os_problem_names_only_fixable_conditions():
    import errno

    from stf_jax.errors import os_problem

    assert os_problem(OSError(errno.EROFS, "Read-only file system", "/mnt/x")).startswith("/mnt/x: Read-only")
    assert os_problem(OSError(errno.ENOSPC, "No space left on device", "/data/y")).endswith("write elsewhere")
    assert os_problem(OSError(errno.EIO, "Input/output error", "/d")) is None  # not the user's to fix
    assert os_problem(OSError(errno.EACCES, "Permission denied")) is None  # no path named
    assert os_problem(ValueError("x")) is None


@pytest.mark.parametrize("probe", ["empty npy", "junk npy", "pickle npy", "binary judge file", "judge directory",
                                   "junk results"])
def test_cli_probes_are_one_line(tmp_path, probe):
    """Probes of the second hostile round: each is exit 2 with one line, and nothing is written."""
    empty, junk, pickled = tmp_path / "empty.npy", tmp_path / "junk.npy", tmp_path / "pickle.npy"
    empty.write_bytes(b"")
    junk.write_bytes(bytes(range(256)))
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "binary.txt").write_bytes(b"\xe9\xff\x00 text")
    (tmp_path / "results.json").write_text("[1, 2")
    out = tmp_path / "o.gguf"
    export = ["-m", "stf_jax.steer", "export", "--layer", "3", "--model-hint", "llama", "--out", str(out), "--vector"]
    args = {"empty npy": [*export, str(empty)], "junk npy": [*export, str(junk)], "pickle npy": [*export, str(pickled)],
            "binary judge file": ["-m", "stf_jax.judge", "score", "formality", "--file", str(tmp_path / "binary.txt")],
            "judge directory": ["-m", "stf_jax.judge", "score", "formality", "--file", str(tmp_path)],
            "junk results": ["-m", "stf_jax.judge", "merge", str(tmp_path / "results.json"), "--out",
                             str(tmp_path / "merged")]}[probe]
    got = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and got.stderr.startswith("error: "), got.stderr
    assert not out.exists() and not (tmp_path / "merged").exists()


@pytest.mark.parametrize("sweep,message", [
    ({"sweep": {"pairs": {"A->B": {"layers_source": [2], "layers_target": [2]}}}}, "not a layer-sweep record"),
    ({"sweep": {"pairs": {"A->B": {"layers_source": [2, 3], "layers_target": [2, 3],
                                   "test_centered": [[None, None], [None, None]]}}}}, "scores none"),
    ({"sweep": {"pairs": {"A->B": {"layers_source": [2, 3], "layers_target": [2],
                                   "test_centered": [[0.1, 0.2]]}}}}, "shape"),
    ({"sweep": [1]}, "no layer sweep"),
    ([1, 2], "no layer sweep")])
def test_damaged_sweep_files_are_one_line_errors(tmp_path, sweep, message):
    import json
    from types import SimpleNamespace

    from stf_jax.transfer.fit import _from_sweep

    path = tmp_path / "results.json"
    path.write_text(json.dumps(sweep))
    with pytest.raises(UserError, match=message):
        _from_sweep(path, SimpleNamespace(name="A"), SimpleNamespace(name="B"), [2, 3], [2, 3])


@pytest.mark.parametrize("edit,message", [("str layer", "layer_target 'two'"), ("bool layer", "layer_source True")])
def test_map_set_index_layers_must_be_the_map_files(tmp_path, edit, message):
    import json
    import shutil

    import stf_jax

    src = stf_jax.transfer.mapfile.shipped_path(SHIPPED)
    dst = tmp_path / "set"
    shutil.copytree(src, dst)
    index = json.loads((dst / "mapset.json").read_text())
    if edit == "str layer":
        index["maps"][0]["layer_target"] = "two"
    else:
        index["maps"][0]["layer_source"] = True
    (dst / "mapset.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=message):
        stf_jax.load_map(dst)


def test_transfer_fit_checks_its_output_before_any_work(tmp_path):
    """An --out that cannot be written (here: under a file) fails at once, before the runs are read or fitted."""
    (tmp_path / "file").write_text("x")
    got = subprocess.run([sys.executable, "-m", "stf_jax.transfer", "fit", str(tmp_path / "no_run"), "--source", "a",
                          "--target", "b", "--out", str(tmp_path / "file" / "maps")], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "Not a directory" in got.stderr, got.stderr


@pytest.mark.parametrize("probe", ["junk safetensors", "zero safetensors", "non-UTF-8 name"])
def test_more_file_probes_are_one_line(tmp_path, probe):
    import os

    import stf_jax

    if probe == "non-UTF-8 name":
        lib = tmp_path / "lib"
        lib.mkdir()
        v = stf_jax.SteeringVector({20: np.ones(576, np.float32)}, model="smollm2-135m", model_type="llama")
        v.save(lib / "v.gguf")
        os.rename(lib / "v.gguf", os.path.join(os.fsencode(lib), b"bad\xff.gguf"))
        args = ["-m", "stf_jax.transfer", "apply", "--map", SHIPPED, str(lib), "--out", str(tmp_path / "out")]
        expected = "not valid UTF-8"
    else:
        path = tmp_path / "v.safetensors"
        path.write_bytes(b"" if probe.startswith("zero") else bytes(range(64)))
        args = ["-m", "stf_jax.steer", "export", "--vector", str(path), "--layer", "3", "--model-hint", "llama",
                "--out", str(tmp_path / "o.gguf")]
        expected = "not a readable control vector or run layer file"
    got = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and expected in got.stderr, got.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.gguf").exists()
