"""Every probe the second hostile-input round named, run as a careless user or an attacker would: one real
command per probe, in a fresh process, then a verdict.

    python scripts/probe_hostile.py            # ~40 probes, ~3 min on 2 CPU cores
    python scripts/probe_hostile.py --only gguf-bomb yaml-laughs

A probe that must be refused passes when the command exits 2 with exactly one line on stderr, no traceback,
and nothing new or changed in its output location (the probe's scratch directory is hashed before and after).
A probe with a correct result passes when exit is 0 and its own check holds. The two memory bombs also
report wall time and the command's peak RSS (VmHWM), run under a 2 GB address-space cap.
Exit status: 0 when every probe passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SHIPPED = "shipped:smollm2-135m->gemma3-270m"


@dataclass
class Probe:
    name: str
    group: str
    argv: list[str]                      # after `python -m`
    ok: Callable[[Path], bool] | None = None   # a correct result (exit 0) and this check, instead of a refusal
    says: str = ""                       # the one line must contain this
    capped: bool = False                 # memory bomb: 2 GB address-space cap, time and peak RSS reported


@dataclass
class Outcome:
    probe: Probe
    rc: int
    stderr: str
    seconds: float
    peak_mb: float
    changed: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def passed(self) -> bool:
        if self.probe.ok is not None:
            return self.rc == 0 and self.probe.ok(self.workdir)
        one_line = self.stderr.count("\n") == 1 and "Traceback" not in self.stderr
        return self.rc == 2 and one_line and self.probe.says in self.stderr and not self.changed


# ------------------------------------------------------------------ the files the probes feed in

def gguf_bomb(path: Path, count: int = 1 << 62) -> Path:
    """128 bytes: GGUF v3, no tensors, one key whose UINT8 array claims `count` entries."""
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, count)
    path.write_bytes(data + b"\0" * (128 - len(data)))
    return path


LAUGHS = ("name: lol\nmodels: [a, b]\n" + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
          + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
          + "extract: *i\n")


def _vector(path: Path, model: str = "smollm2-135m", model_type: str = "llama", d: int = 576, layer: int = 20):
    from stf_jax import SteeringVector

    rng = np.random.default_rng(0)
    return SteeringVector({layer: rng.standard_normal(d).astype(np.float32)}, model=model,
                          model_type=model_type, trait="probe").save(path)


def _map_set(root: Path, name: str, edit: Callable[[Path], None]) -> Path:
    """A copy of the shipped smollm2 -> gemma3 map set, edited."""
    from stf_jax.transfer.mapfile import shipped_path

    dst = root / name
    shutil.copytree(shipped_path(SHIPPED), dst)
    edit(dst)
    return dst


def _edit_index(fn):
    def edit(d: Path):
        index = json.loads((d / "mapset.json").read_text())
        (d / "mapset.json").write_text(json.dumps(fn(index)))
    return edit


def _restamp(d: Path) -> None:
    """Record the map files' current checksums in the index, as a user copying files between sets and
    fixing the index would: the set's consistency checks, not the checksum, must then catch the edit."""
    from stf_jax.core.atomic import file_sha256

    index = json.loads((d / "mapset.json").read_text())
    for entry in index["maps"]:
        entry["sha256"] = file_sha256(d / entry["file"])
    (d / "mapset.json").write_text(json.dumps(index))


def _edit_header(fn, restamp: bool = True):
    """Rewrite the first map file's header (metadata) through safetensors itself; tensors unchanged."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    def edit(d: Path):
        first = sorted(d.glob("*.safetensors"))[0]
        with safe_open(str(first), "numpy") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        key = next(iter(meta))
        meta[key] = json.dumps(fn(json.loads(meta[key])))
        save_file(tensors, str(first), metadata=meta)
        if restamp:
            _restamp(d)
    return edit


def _reverse_map(d: Path):
    """Put a gemma3 -> smollm2 map file, renamed, in place of one of the set's own; index restamped."""
    from stf_jax.transfer.mapfile import shipped_path

    from stf_jax.transfer.mapfile import load_layer_map

    first = sorted(d.glob("*.safetensors"))[0]
    shutil.copyfile(sorted(shipped_path("shipped:gemma3-270m->smollm2-135m").glob("*.safetensors"))[0], first)
    m = load_layer_map(first)
    index = json.loads((d / "mapset.json").read_text())
    entry = next(e for e in index["maps"] if e["file"] == first.name)
    entry["layer_source"], entry["layer_target"] = m.layer_source, m.layer_target
    (d / "mapset.json").write_text(json.dumps(index))
    _restamp(d)


def _set(*keys_value):
    *keys, value = keys_value

    def fn(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        return d
    return fn


def _drop(key):
    def fn(d):
        d.pop(key)
        return d
    return fn


def _ro_mount(path: Path) -> bool:
    """A read-only tmpfs at `path` (root only); False where this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


# ------------------------------------------------------------------ the probes (issue 26's list, in its order)

def probes(w: Path, mount: bool = True) -> list[Probe]:
    from stf_jax.testing import make_planted_run

    run, _ = make_planted_run(w / "run")
    good = _vector(w / "good.gguf")
    apply = lambda vec, out="out", *more: ["stf_jax.transfer", "apply", "--map", SHIPPED, str(vec), "--out",  # noqa: E731
                                           str(w / out), *more]
    fit = lambda out, *more: ["stf_jax.transfer", "fit", str(run), "--source", "A", "--target", "B", "--layers",  # noqa: E731
                              "1", "--no-norms", "--out", str(w / out), *more]
    export = lambda vec: ["stf_jax.steer", "export", "--vector", str(vec), "--layer", "3", "--model-hint",  # noqa: E731
                          "llama", "--out", str(w / "export.gguf")]
    generate = lambda vec: ["stf_jax.steer", "generate", "--model", "smollm2-135m", "--vector", str(vec),  # noqa: E731
                            "--layer", "20", "--max-new-tokens", "4", "Hello"]
    judge = lambda path: ["stf_jax.judge", "score", "formality", "--file", str(path)]  # noqa: E731

    # libraries whose carried vectors would share an output name
    for sub in ("lib", "d1", "d2"):
        (w / sub).mkdir()
    _vector(w / "lib" / "a.gguf")
    np.save(w / "lib" / "a.npy", np.ones(576, np.float32))
    _vector(w / "d1" / "x.gguf")
    _vector(w / "d2" / "x.gguf")
    # a map set fitted once, which a second fit must not replace
    first = subprocess.run([sys.executable, "-m", *fit("fitted")], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # configs
    (w / "laughs.yaml").write_text(LAUGHS)
    demo = Path("configs/experiments/demo.yaml").read_text()
    (w / "batch.yaml").write_text(demo.replace("batch_size: 32", "batch_size: 1e400").replace("runs/demo", str(w / "r1")))
    (w / "ppt.yaml").write_text(demo.replace("pairs_per_trait: 3", "pairs_per_trait: -1").replace("runs/demo", str(w / "r2")))
    # vectors
    np.save(w / "complex.npy", np.ones(576, np.complex64))
    (w / "empty.npy").write_bytes(b"")
    (w / "junk.npy").write_bytes(bytes(range(256)))
    (w / "empty.safetensors").write_bytes(b"")
    (w / "junk.safetensors").write_bytes(bytes(range(64)))
    np.save(w / "pickle.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2199023255552, 4), }"
    (w / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode() + b"\n")
    _vector(w / "other.gguf", model="gemma3-270m", model_type="gemma3", d=576, layer=20)
    os.makedirs(w / "utf8lib")
    _vector(Path(os.fsdecode(os.path.join(os.fsencode(w / "utf8lib"), b"bad\xff.gguf"))))
    (w / "binary.txt").write_bytes(b"\xe9\xff\x00 text")
    (w / "a_file").write_text("x")
    (w / "sweep_keys.json").write_text(json.dumps({"sweep": {"pairs": {"A->B": {"layers_source": [1]}}}}))
    (w / "sweep_nan.json").write_text(json.dumps({"sweep": {"pairs": {"A->B": {
        "layers_source": [0, 1, 2], "layers_target": [0, 1, 2], "test_centered": [[None] * 3] * 3}}}}))
    ro = w / "ro"
    has_ro = mount and _ro_mount(ro)
    # map sets edited the ways the issue lists
    sets = {"list": _edit_index(lambda i: [i]), "no-settings": _edit_index(_drop("settings")),
            "neg-d": _edit_index(_set("source", "d_model", -576)),
            "str-layer": _edit_index(lambda i: (i["maps"][0].__setitem__("layer_target", 2.5), i)[1]),
            "reverse": _reverse_map,
            "other-model": _edit_header(_set("source", "name", "qwen2-0.5b")),
            "other-width": _edit_header(_set("target", "d_model", 1024)),
            "stale-checksum": _edit_header(_set("quality", {}), restamp=False),
            "header-list": _edit_header(lambda h: [h]),
            "header-nan-ridge": _edit_header(_set("settings", "ridge", float("nan"))),
            "header-no-settings": _edit_header(_drop("settings")),
            "two-for-one": _edit_index(lambda i: (i.__setitem__("maps", i["maps"] + i["maps"][:1]), i)[1])}
    mapsets = {k: _map_set(w, f"set-{k}", e) for k, e in sets.items()}
    mapped = lambda k: ["stf_jax.transfer", "apply", "--map", str(mapsets[k]), str(good), "--out", str(w / "out")]  # noqa: E731

    def carried_under_force(d: Path) -> bool:
        return len(list((d / "forced").glob("*.gguf"))) == 1

    P = Probe
    out = [
        P("gguf-bomb", "memory bomb", apply(gguf_bomb(w / "bomb.gguf")), says="not a valid GGUF file", capped=True),
        P("yaml-laughs", "memory bomb", ["stf_jax.experiment", str(w / "laughs.yaml")], says="alias", capped=True),
        P("library a.gguf + a.npy", "outputs lost", apply(w / "lib", "out", "--layer", "20"),
          says="would both be written as"),
        P("d1/x.gguf d2/x.gguf", "outputs lost", ["stf_jax.transfer", "apply", "--map", SHIPPED, str(w / "d1" / "x.gguf"),
                                                  str(w / "d2" / "x.gguf"), "--out", str(w / "out")],
          says="would both be written as"),
        P("second fit into one --out", "outputs lost", fit("fitted"), says="already holds a map set"),
        P("fit --ridge nan", "silently wrong", fit("n1", "--ridge", "nan"), says="--ridge"),
        P("fit --ridge -1", "silently wrong", fit("n2", "--ridge", "-1"), says="--ridge"),
        P("fit --k -3", "silently wrong", fit("n3", "--k", "-3"), says="--k"),
        P("reverse-direction map in a set", "silently wrong", mapped("reverse"), says="another source model"),
        P("map header names another model", "silently wrong", mapped("other-model"), says="another source model"),
        P("map header gives another width", "silently wrong", mapped("other-width")),
        P("map file edited, index not", "silently wrong", mapped("stale-checksum"), says="checksum"),
        P("two maps for one target layer", "silently wrong", mapped("two-for-one"), says="two maps"),
        P("vector made for another model", "silently wrong", apply(w / "other.gguf"), says="--force"),
        P("... the same with --force", "silently wrong", apply(w / "other.gguf", "forced", "--force"),
          ok=carried_under_force),
        P("complex .npy", "silently wrong", apply(w / "complex.npy", "out", "--layer", "20"), says="complex"),
        P("batch_size: 1e400 in YAML", "silently wrong", ["stf_jax.experiment", str(w / "batch.yaml")],
          says="batch_size"),
        P("mapset.json is a list", "traceback", mapped("list")),
        P("mapset.json without settings", "traceback", mapped("no-settings"), says="'settings'"),
        P("negative d_model", "traceback", mapped("neg-d"), says="d_model"),
        P("non-integer layer", "traceback", mapped("str-layer")),
        P("map header without settings", "traceback", mapped("header-no-settings"), says="'settings'"),
        P("map header is a list", "traceback", mapped("header-list")),
        P("map header with ridge NaN", "traceback", mapped("header-nan-ridge"), says="ridge"),
        P("--test-fraction 1.5", "traceback", fit("n4", "--test-fraction", "1.5"), says="--test-fraction"),
        P("sweep file missing keys", "traceback", fit("n5", "--layers", f"sweep:{w / 'sweep_keys.json'}")),
        P("sweep file all NaN", "traceback", fit("n6", "--layers", f"sweep:{w / 'sweep_nan.json'}")),
        P("steer generate: zero-byte .npy", "traceback", generate(w / "empty.npy")),
        P("steer generate: junk .npy", "traceback", generate(w / "junk.npy")),
        P("steer generate: zero-byte .safetensors", "traceback", generate(w / "empty.safetensors")),
        P("steer generate: junk .safetensors", "traceback", generate(w / "junk.safetensors")),
        P("steer export: zero-byte .npy", "traceback", export(w / "empty.npy")),
        P("steer export: junk .npy", "traceback", export(w / "junk.npy")),
        P("steer export: zero-byte .safetensors", "traceback", export(w / "empty.safetensors")),
        P("steer export: junk .safetensors", "traceback", export(w / "junk.safetensors")),
        P("steer generate: pickle .npy", "traceback", generate(w / "pickle.npy"), says="pickle"),
        P(".npy header declaring 7 TiB", "traceback", apply(w / "huge.npy", "out", "--layer", "20")),
        P("library name not UTF-8", "traceback", apply(w / "utf8lib"), says="UTF-8"),
        P("--out is an existing file", "traceback", apply(good, "a_file")),
        P("--out a directory where a file goes", "traceback", ["stf_jax.steer", "export", "--vector", str(good),
                                                                "--out", str(w / "lib")]),
        P("--out /dev/null", "traceback", apply(good, "/dev/null")),
        P("pairs_per_trait: -1 in YAML", "traceback", ["stf_jax.experiment", str(w / "ppt.yaml")],
          says="pairs_per_trait"),
        P("judge score --file binary", "traceback", judge(w / "binary.txt")),
        P("judge score --file directory", "traceback", judge(w)),
    ]
    if has_ro:
        out += [P("--out on a read-only filesystem", "traceback", apply(good, "ro/out"), says="Read-only"),
                P("fit --out read-only, before fitting", "traceback", fit("ro/maps"), says="Read-only")]
    return out


# ------------------------------------------------------------------ running them

def _digest(root: Path) -> dict[str, str]:
    seen = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and "ro" not in p.relative_to(root).parts[:1]:
            seen[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


# `python -m MODULE ARGS` with an optional address-space cap set by the child itself (no preexec_fn: this
# process may hold JAX's threads when it forks), reporting its own peak RSS (VmHWM: ru_maxrss would carry
# the forking parent's over the exec) on stdout at exit
WRAPPER = """
import atexit, resource, runpy, sys
cap = int(sys.argv[1])
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
atexit.register(lambda: print("peak_mb", [int(l.split()[1]) for l in open("/proc/self/status")
                                          if l.startswith("VmHWM")][0] / 1024, flush=True))
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def run_probe(probe: Probe, w: Path) -> Outcome:
    cmd = [sys.executable, "-c", WRAPPER, str(2 << 30 if probe.capped else 0), *probe.argv]
    before = _digest(w)
    t0 = time.perf_counter()
    got = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peaks = [float(line.split()[1]) for line in got.stdout.splitlines() if line.startswith("peak_mb ")]
    after = _digest(w)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return Outcome(probe, got.returncode, got.stderr, seconds, peaks[-1] if peaks else float("nan"), changed, w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these probes (names as printed)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory and print its path")
    ap.add_argument("--no-mount", action="store_true",
                    help="skip the two read-only-filesystem probes (they mount a read-only tmpfs; root only)")
    args = ap.parse_args(argv)
    w = Path(tempfile.mkdtemp(prefix="stf_probe_"))
    try:
        todo = [p for p in probes(w, mount=not args.no_mount) if not args.only or p.name in args.only]
        results = []
        for p in todo:
            o = run_probe(p, w)
            results.append(o)
            line = o.stderr.strip().splitlines()[-1] if o.stderr.strip() else ""
            extra = f"  {o.seconds:.1f} s, peak {o.peak_mb:.0f} MB" if p.capped else ""
            print(f"{'PASS' if o.passed else 'FAIL'}  [{p.group}] {p.name}: exit {o.rc}, "
                  f"{o.stderr.count(chr(10))} line(s){extra}{', wrote ' + ', '.join(o.changed) if o.changed else ''}"
                  f"\n      {line[:150]}", flush=True)
        passed = sum(o.passed for o in results)
        print(f"\n{passed}/{len(results)} probes pass" + ("" if (w / "ro").is_mount() or args.only else
                                                          " (the read-only-filesystem probes were not run)"))
        return 0 if passed == len(results) else 1
    finally:
        subprocess.run(["umount", str(w / "ro")], capture_output=True)
        if args.keep:
            print("scratch:", w)
        else:
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
