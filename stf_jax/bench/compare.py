"""Every number two experiment (or run) directories hold, compared: JSON leaves (keys matched), CSV cells,
.npz/.npy arrays, safetensors tensors and GGUF tensors. Timings, dates, versions and paths are skipped.
`scripts/compare_runs.py` prints it; `scripts/protocol_snapshot.py` uses `leaves`."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np

VOLATILE = {"seconds", "elapsed", "date", "created", "started", "finished", "version", "versions", "host", "pid",
            "time", "timestamp", "path", "root", "run_dir", "out", "wall_s", "cpu_s", "jax", "jaxlib", "numpy",
            "transformers", "python", "platform", "devices", "backend"}
VOLATILE_SUFFIXES = ("_seconds", "_s", "_time", "_per_s", "_version", "_path")


def _volatile(key: str) -> bool:
    """A timing, date, version or path: not a result (matched on the last key, indices dropped)."""
    parts = [re.sub(r"\[\d+\]", "", p).lower() for p in key.strip("/").split("/")]
    return any(p in VOLATILE or p.endswith(VOLATILE_SUFFIXES) for p in parts)


def leaves(obj, prefix: str = ""):
    """(path, value) of every leaf of a JSON value, paths like /a/b[3]."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    if path.suffix == ".npy":
        return {"": np.load(path)}
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix == ".gguf":
        import gguf

        return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    return {}


def _plain_files(root: Path) -> set[Path]:
    """Files compared by name: not extraction chunks, and not orbax checkpoint internals (random names;
    their adapters are compared through `adapters` below)."""
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".chunks" not in p.parts
            and "state" not in p.relative_to(root).parts}


def _adapters(a: Path, b: Path, stats: dict, only: list) -> None:
    """Every saved adapter (orbax state) of both trees, parameters compared leaf by leaf."""
    import jax

    from ..align.adapters import load_adapter

    dirs_a = {p.parent.relative_to(a) for p in a.rglob("adapter.json")}
    dirs_b = {p.parent.relative_to(b) for p in b.rglob("adapter.json")}
    only += [f"adapter only on one side: {d}" for d in sorted(dirs_a ^ dirs_b)]
    s = stats.setdefault("(adapter params)", {"max_abs_diff": 0.0, "values": 0, "files": 0, "where": ""})
    for d in sorted(dirs_a & dirs_b):
        pa, pb = load_adapter(a / d), load_adapter(b / d)
        s["files"] += 1
        for x, y in zip(jax.tree.leaves(pa.params), jax.tree.leaves(pb.params)):
            diff = float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) if np.size(x) else 0.0
            s["values"] += int(np.size(x))
            if diff > s["max_abs_diff"]:
                s["max_abs_diff"], s["where"] = diff, str(d)


def compare(a: Path, b: Path) -> dict:
    """{per_kind: {suffix: max_abs_diff, values, files, where}, one_side_only, volatile_keys_skipped}."""
    stats: dict[str, dict] = {}
    only: list[str] = []
    volatile: set[str] = set()
    files_a, files_b = _plain_files(a), _plain_files(b)
    _adapters(a, b, stats, only)
    only += [f"only before: {p}" for p in sorted(files_a - files_b)] + [f"only after: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        kind = rel.suffix if rel.suffix and len(rel.suffix) <= 12 else "(other)"
        s = stats.setdefault(kind, {"max_abs_diff": 0.0, "values": 0, "files": 0, "where": ""})
        s["files"] += 1
        pa, pb = a / rel, b / rel
        diffs = []
        if rel.suffix == ".json":
            la, lb = dict(leaves(json.loads(pa.read_text()))), dict(leaves(json.loads(pb.read_text())))
            for k in sorted(set(la) ^ set(lb)):
                only.append(f"{rel}{k}: {'before' if k in la else 'after'} only")
            for k in set(la) & set(lb):
                x, y = la[k], lb[k]
                if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                    if x != y and not _volatile(k):
                        diffs.append((math.inf, f"{rel}{k}: {x!r:.60} vs {y!r:.60}"))
                    continue
                if _volatile(k):
                    volatile.add(k.rsplit("/", 1)[-1])
                    continue
                d = 0.0 if (math.isnan(x) and math.isnan(y)) or x == y else abs(x - y)
                diffs.append((d, f"{rel}{k}"))
        elif rel.suffix == ".csv":
            ra, rb = list(csv.reader(pa.open())), list(csv.reader(pb.open()))
            for i, (r1, r2) in enumerate(zip(ra, rb)):
                for j, (x, y) in enumerate(zip(r1, r2)):
                    try:
                        fx, fy = float(x), float(y)
                        diffs.append((0.0 if fx == fy or (math.isnan(fx) and math.isnan(fy)) else abs(fx - fy),
                                      f"{rel}[{i},{j}]"))
                    except ValueError:
                        if x != y:
                            diffs.append((math.inf, f"{rel}[{i},{j}]: {x!r} vs {y!r}"))
        else:
            xa, xb = _arrays(pa), _arrays(pb)
            for k in set(xa) & set(xb):
                if xa[k].shape != xb[k].shape:
                    diffs.append((math.inf, f"{rel}:{k} shape {xa[k].shape} vs {xb[k].shape}"))
                elif xa[k].size and np.issubdtype(xa[k].dtype, np.number):
                    d = np.abs(xa[k].astype(np.float64) - xb[k].astype(np.float64))
                    d = np.where(np.isnan(d) & np.isnan(xa[k]) & np.isnan(xb[k]), 0.0, d)
                    diffs.append((float(np.nanmax(d)), f"{rel}:{k}"))
                    s["values"] += xa[k].size - 1
            for k in sorted(set(xa) ^ set(xb)):
                only.append(f"{rel}:{k}: one side only")
        for d, where in diffs:
            s["values"] += 1
            if d > s["max_abs_diff"]:
                s["max_abs_diff"], s["where"] = d, where
    return {"per_kind": stats, "one_side_only": only, "volatile_keys_skipped": sorted(volatile)}
