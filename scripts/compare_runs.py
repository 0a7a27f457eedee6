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
from pathlib import Path

from stf_jax.bench.compare import compare


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
