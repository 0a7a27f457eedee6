"""Every reader of a user file, fuzzed under a memory cap: mutated GGUF and safetensors control vectors, .npy
vectors, map-set indexes, map files, contrast-pair files, sweep files and YAML configs.

The mutations are the ones that make readers allocate: truncations, flipped bytes, and 8-byte fields
overwritten with huge counts (2^62, 2^40, 2^32 - 1). Each case runs in one child process under
`RLIMIT_AS` = 2 GB (a reader that believes a declared count dies with MemoryError there) and must end in a
correct result or a `UserError`; anything else (a traceback, a MemoryError, a hang past the deadline) fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("hypothesis")

CHILD = textwrap.dedent('''
    import json, resource, shutil, struct, sys, tempfile, warnings
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st

    cap = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    warnings.simplefilter("ignore")

    import stf_jax
    from stf_jax import SteeringVector
    from stf_jax.errors import UserError

    KIND, EXAMPLES, SHIPPED = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tmp = Path(tempfile.mkdtemp())
    BIG = [1 << 62, 1 << 40, (1 << 32) - 1, 1 << 31]

    def seed_bytes() -> bytes:
        rng = np.random.default_rng(0)
        v = SteeringVector({3: rng.standard_normal(16).astype(np.float32),
                            4: rng.standard_normal(16).astype(np.float32)}, model_type="llama", trait="t")
        if KIND in ("gguf", "safetensors"):
            return Path(v.save(tmp / f"seed.{KIND}")).read_bytes()
        if KIND == "npy":
            np.save(tmp / "seed.npy", rng.standard_normal(16).astype(np.float32))
            return (tmp / "seed.npy").read_bytes()
        if KIND == "mapset":
            return (Path(SHIPPED) / "mapset.json").read_bytes()
        if KIND == "mapfile":  # the smallest of the shipped map set's layer files, header and weights
            return min(Path(SHIPPED).glob("*.safetensors"), key=lambda f: f.stat().st_size).read_bytes()
        if KIND == "pairs":
            return Path("stf_jax/data/contrast_pairs/formality.jsonl").read_bytes()[:4000]
        if KIND == "sweep":
            return json.dumps({"sweep": {"pairs": {"A->B": {"layers_source": [2, 3], "layers_target": [2, 3],
                                                            "test_centered": [[0.1, 0.2], [0.3, 0.4]]}}}}).encode()
        return Path("configs/experiments/demo.yaml").read_bytes()

    SEED = seed_bytes()
    # where edits land: the whole file, but a map file's 1 MB of weights only through truncation, so that
    # most cases hit its header (8-byte length + JSON) where the reader decides what to allocate
    HOT = 8 + struct.unpack("<Q", SEED[:8])[0] + 16 if KIND == "mapfile" else len(SEED)
    edit = st.tuples(st.sampled_from(["truncate", "flip", "big", "insert"]), st.integers(0, HOT),
                     st.integers(0, 255), st.sampled_from(BIG))

    def mutate(data: bytes, edits) -> bytes:
        for op, at, byte, big in edits:
            at = min(at, len(data))
            if op == "truncate":
                data = data[:at]
            elif op == "flip" and at < len(data):
                data = data[:at] + bytes([byte]) + data[at + 1:]
            elif op == "big":
                data = data[:at] + struct.pack("<Q", big) + data[at + 8:]
            else:
                data = data[:at] + bytes([byte]) * 8 + data[at:]
        return data

    def read(data: bytes) -> None:
        if KIND in ("gguf", "safetensors", "npy"):
            path = tmp / f"v.{KIND}"
            path.write_bytes(data)
            SteeringVector.load(path, layer=3 if KIND == "npy" else None)
        elif KIND == "mapset":
            d = tmp / "set"
            if not d.exists():
                shutil.copytree(SHIPPED, d)
            (d / "mapset.json").write_bytes(data)
            stf_jax.load_map(d)
        elif KIND == "mapfile":
            from stf_jax.transfer.mapfile import load_layer_map

            (tmp / "m.safetensors").write_bytes(data)
            load_layer_map(tmp / "m.safetensors")
        elif KIND == "pairs":
            from stf_jax.data.pairs import load_pairs

            (tmp / "p.jsonl").write_bytes(data)
            load_pairs(tmp / "p.jsonl")
        elif KIND == "sweep":
            from stf_jax.transfer.fit import _from_sweep

            (tmp / "s.json").write_bytes(data)
            _from_sweep(tmp / "s.json", SimpleNamespace(name="A"), SimpleNamespace(name="B"), [2, 3], [2, 3])
        else:
            from stf_jax.experiment import check_experiment, load_experiment

            (tmp / "c.yaml").write_bytes(data)
            check_experiment(load_experiment(tmp / "c.yaml"))

    @settings(max_examples=EXAMPLES, deadline=10_000, derandomize=True, suppress_health_check=list(HealthCheck),
              database=None)
    @given(st.lists(edit, min_size=1, max_size=3))
    def fuzz(edits):
        try:
            read(mutate(SEED, edits))
        except UserError:
            pass

    fuzz()
    print("ok", KIND)
''')


@pytest.mark.parametrize("kind,examples", [("gguf", 2000), ("safetensors", 1500), ("npy", 1500), ("mapset", 400),
                                           ("mapfile", 400), ("pairs", 600), ("sweep", 1000),
                                           ("yaml", 600)])
def test_reader_survives_mutations_under_a_memory_cap(kind, examples):
    from stf_jax.transfer.mapfile import shipped_path

    shipped = str(shipped_path("shipped:smollm2-135m->gemma3-270m"))
    got = subprocess.run([sys.executable, "-c", CHILD, kind, str(examples), shipped], capture_output=True, text=True,
                         timeout=600)
    assert got.returncode == 0 and f"ok {kind}" in got.stdout, got.stderr[-3000:]
