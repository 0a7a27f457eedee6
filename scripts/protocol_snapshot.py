"""Before/after snapshot of the alignment protocol's numbers on a planted run (all methods, scrambles, sweep).

    python scripts/protocol_snapshot.py before.json   # on one commit, then after.json on another; compare

Used to show that moving every method behind the map table (align/maps.py) left the protocol's numbers
unchanged: 2,706 numbers, max |difference| 3e-7.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_align import make_planted_run
from stf_jax.align import EvalConfig, evaluate
from stf_jax.align.adapters import AdapterConfig

out = Path(sys.argv[1])
root, _ = make_planted_run(Path("/tmp/snap/run"), zero_vectors=False)  # as measured before/after the refactor
cfg = EvalConfig(trials=2, adapter=AdapterConfig(max_steps=200, eval_every=50))
res = evaluate([str(root)], cfg, layer=1, sweep=True, log=lambda *a: None)
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("seconds", "version", "created", "stf_jax_version")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
out.write_text(json.dumps(strip(res), indent=0, sort_keys=True, default=str))
print("wrote", out)
