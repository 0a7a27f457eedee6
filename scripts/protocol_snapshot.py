"""Before/after snapshot of the alignment protocol's numbers on a planted run (all methods, scrambles, sweep)."""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main/tests")
from test_align import _pairs, write_run
from stf_jax.align import EvalConfig, evaluate
from stf_jax.align.adapters import AdapterConfig
from stf_jax.align.synthetic import planted_vectors

out = Path(sys.argv[1])
pairs = _pairs()
names = sorted({p.trait for p in pairs})
traits = np.array([names.index(p.trait) for p in pairs])
a1, b2 = planted_vectors(traits, [24, 32], 20, noise=0.3, trait_strength=0.7, seed=1, normalize=True)
a0, _ = planted_vectors(traits, [24, 32], 20, seed=2, normalize=True)
_, b0 = planted_vectors(traits, [24, 32], 20, seed=3, normalize=True)
_, b1 = planted_vectors(traits, [24, 32], 20, seed=5, normalize=True)
a2, _ = planted_vectors(traits, [24, 32], 20, seed=4, normalize=True)
root = write_run(Path("/tmp/snap/run"), pairs, {"A": [a0, a1, a2], "B": [b0, b1, b2]})
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
