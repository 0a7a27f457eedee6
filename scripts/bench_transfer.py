"""Transfer a library of N multi-layer control vectors through a loaded map set; time it.

    python scripts/bench_transfer.py                       # 1,000 vectors, smollm2 -> gemma3 shapes, 16 layers
    python scripts/bench_transfer.py --maps maps/smollm2__gemma3 --n 1000

Without --maps, a map set of the shipped models' shapes (d 576 -> 640; 16 steerable gemma3 layers from
30 smollm2 layers by relative depth) is fitted on planted vectors. The library is N llama.cpp GGUF
control vectors (every source layer of the set), written first; then `transfer_files` reads all N,
carries them (one batched map call per layer pair) and writes N target GGUFs. Prints the end-to-end
time and its parts, and the reference: the same carrying done one vector at a time (a loop over
`carry`), which is what a user without the batched call would write.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def planted_map_set(method: str, d_s: int = 576, d_t: int = 640, n_s: int = 30, n_t: int = 18, n: int = 600):
    from stf_jax.align.maps import FitSettings, fit_map
    from stf_jax.transfer.mapfile import LayerMap, MapSet, header_for

    rng = np.random.default_rng(0)
    out = {}
    for lt in range(2, n_t):
        ls = min(range(2, n_s), key=lambda s: abs(s / n_s - lt / n_t))
        x_s = rng.standard_normal((n, d_s)).astype(np.float32)
        x_t = x_s @ rng.standard_normal((d_s, d_t)).astype(np.float32) * 0.05
        settings = FitSettings(k=64)
        m, _ = fit_map(method, x_s, x_t, settings=settings)
        info = {"name": "src", "model_type": "llama", "d_model": d_s, "n_layers": n_s}
        header = header_for(method, settings, {**info, "layer": ls, "typical_norm": 100.0},
                            {**info, "name": "tgt", "model_type": "gemma3_text", "d_model": d_t, "n_layers": n_t,
                             "layer": lt, "typical_norm": 1000.0}, {"n_pairs": n}, {})
        out[lt] = LayerMap(m, header)
    return MapSet(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maps", help="a saved map set [planted, shipped-model shapes]")
    p.add_argument("--method", default="affine", help="method of the planted map set [affine]")
    p.add_argument("--n", type=int, default=1000, help="vectors in the library [1000]")
    p.add_argument("--reference-n", type=int, default=100, help="vectors for the one-at-a-time reference [100]")
    args = p.parse_args()

    from stf_jax import SteeringVector
    from stf_jax.transfer import carry, load_map_set, transfer_files

    t0 = time.perf_counter()
    map_set = load_map_set(args.maps) if args.maps else planted_map_set(args.method)
    t_maps = time.perf_counter() - t0
    src_layers = sorted({lm.layer_source for lm in map_set.maps.values()})
    d_s = int(map_set.source["d_model"])
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        lib, out = Path(tmp) / "lib", Path(tmp) / "out"
        for i in range(args.n):
            dirs = {lay: rng.standard_normal(d_s).astype(np.float32) for lay in src_layers}
            SteeringVector(dirs, model_type="llama", trait=f"t{i}").save(lib / f"v{i:05d}.gguf")
        t0, c0 = time.perf_counter(), time.process_time()
        written = transfer_files(map_set, [lib], out, log=lambda *a: None)
        t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
        assert len(written) == args.n
        # reference: one vector at a time through the same maps (read, carry, no write)
        files = sorted(lib.glob("*.gguf"))[: args.reference_n]
        t0 = time.perf_counter()
        for f in files:
            carry(map_set, SteeringVector.load(f))
        t_ref = (time.perf_counter() - t0) / len(files) * args.n
        t0 = time.perf_counter()
        for f in sorted(lib.glob("*.gguf")):
            SteeringVector.load(f)
        t_read = time.perf_counter() - t0
    n_pairs = len(map_set.maps)
    print(f"map set: {map_set.method}, {n_pairs} layer pairs, d {d_s} -> {map_set.target['d_model']} "
          f"(loaded/fitted in {t_maps:.1f}s)")
    print(f"transfer {args.n} control vectors x {len(src_layers)} layers (read + carry + write GGUF): {t_all:.2f}s "
          f"({args.n / t_all:.0f} vectors/s; CPU time {c_all:.2f}s); reading alone {t_read:.2f}s")
    print(f"one-at-a-time reference (read + carry, no write; {len(files)} timed, scaled to {args.n}): "
          f"{t_ref:.2f}s; batched/reference speed-up {t_ref / t_all:.2f}x")


if __name__ == "__main__":
    main()
