"""Compare every number two experiment directories hold: the refactor check of `configs/experiments/demo.yaml`.

    python scripts/compare_runs.py BEFORE/runs/demo AFTER/runs/demo

Walks both trees; for each file present in both, compares every number: JSON values (leaf by leaf, keys
matched), CSV cells, .npz/.npy arrays, safetensors tensors and GGUF control-vector tensors. Timings and
paths (keys naming seconds, times, dates, versions, hashes of code) are listed apart. Prints, per file
kind, the max |difference| and the number of values compared, and every file or key that exists on one
side only.
"""

from __future__ import annotations

import argparse
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
    last = re.sub(r"\[\d+\]", "", key.rsplit("/", 1)[-1]).lower()
    return last in VOLATILE or last.endswith(VOLATILE_SUFFIXES) or "/versions/" in key


def _leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
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


def compare(a: Path, b: Path) -> dict:
    stats: dict[str, dict] = {}
    only: list[str] = []
    volatile: set[str] = set()
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and ".chunks" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and ".chunks" not in p.parts}
    only += [f"only before: {p}" for p in sorted(files_a - files_b)] + [f"only after: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        kind = rel.suffix if rel.suffix and len(rel.suffix) <= 12 else "(other)"
        s = stats.setdefault(kind, {"max_abs_diff": 0.0, "values": 0, "files": 0, "where": ""})
        s["files"] += 1
        pa, pb = a / rel, b / rel
        diffs = []
        if rel.suffix == ".json":
            la, lb = dict(_leaves(json.loads(pa.read_text()))), dict(_leaves(json.loads(pb.read_text())))
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args()
    res = compare(Path(args.before), Path(args.after))
    for kind, s in sorted(res["per_kind"].items()):
        print(f"{kind:>14}: {s['files']:3d} files, {s['values']:9d} values, max |diff| {s['max_abs_diff']:.3g}"
              + (f"  ({s['where']})" if s["max_abs_diff"] else ""))
    for line in res["one_side_only"]:
        print(line)
    print("volatile keys skipped:", ", ".join(res["volatile_keys_skipped"]))


if __name__ == "__main__":
    main()
