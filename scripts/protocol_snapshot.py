"""Before/after snapshot of the alignment protocol's numbers (all methods, scrambles, layer sweep).

    python scripts/protocol_snapshot.py before.json                      # a planted run
    python scripts/protocol_snapshot.py before.json --run runs/lead_all24  # a real run, the demo's align settings
    # the same on another commit (PYTHONPATH=<its checkout>), then compare the two files:
    python scripts/protocol_snapshot.py --compare before.json after.json

Used to show that moving every method behind the map table (align/maps.py) left the protocol's numbers
unchanged: on the planted run 2,706 numbers, max |difference| 3e-7.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("seconds", "version", "created", "stf_jax_version")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def snapshot(out: Path, run: str | None) -> None:
    from stf_jax.align import EvalConfig, evaluate
    from stf_jax.align.adapters import AdapterConfig

    results = {}
    if run is None:
        from stf_jax.testing import make_planted_run

        root, _ = make_planted_run(Path("/tmp/snap/run"), zero_vectors=False)
        cfg = EvalConfig(trials=2, adapter=AdapterConfig(max_steps=200, eval_every=50))
        results["planted"] = evaluate([str(root)], cfg, layer=1, sweep=True, log=lambda *a: None)
    else:
        align = yaml.safe_load((ROOT / "configs/experiments/demo.yaml").read_text())["align"]
        cfg = EvalConfig(trials=align["trials"], variance=align["variance"], methods=tuple(align["methods"]))
        for name, analysis in align["analyses"].items():
            results[name] = evaluate([run], cfg, layer=analysis.get("layer", -6), sweep=bool(analysis.get("sweep")),
                                     log=lambda *a: None)
    out.write_text(json.dumps(strip(results), indent=0, sort_keys=True, default=str))
    print("wrote", out)


def numbers(x):
    """(path, value) of every number in a JSON value."""
    from stf_jax.bench.compare import leaves

    for path, v in leaves(x):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield path, float(v)


def compare(a: Path, b: Path) -> None:
    na, nb = dict(numbers(json.loads(a.read_text()))), dict(numbers(json.loads(b.read_text())))
    common = sorted(set(na) & set(nb))
    diffs = [abs(na[k] - nb[k]) for k in common if np.isfinite(na[k]) or np.isfinite(nb[k])]
    worst = max(common, key=lambda k: abs(na[k] - nb[k]) if np.isfinite(na[k] - nb[k]) else -1)
    print(f"{len(common)} numbers in both, {len(set(na) ^ set(nb))} in only one; max |difference| "
          f"{max(diffs):.3g} (at {worst})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--run", help="an extraction run with all layers (default: a planted run)")
    ap.add_argument("--compare", action="store_true", help="compare two snapshot files")
    args = ap.parse_args()
    compare(*map(Path, args.files)) if args.compare else snapshot(Path(args.files[0]), args.run)
