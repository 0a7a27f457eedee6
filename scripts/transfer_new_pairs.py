"""Carry a vector made from pairs that were NOT in the run through a fitted map set, in memory and from disk.

    python scripts/transfer_new_pairs.py runs/lead_all24 runs/maps/s2g --trait formality --skip 24 --n 16

Extracts the source and target trait vectors of `n` shipped pairs after the first `skip` of the trait
(the run used the first `skip`), at each layer pair of the map set; carries the source vector with the
map set as fitted (refit here in memory with the same settings) and as loaded from disk; prints the
cosine of each to the target's own (native) vector of the same new pairs, and whether the two carried
vectors are bit-identical. Also writes the source vector as a llama.cpp control vector (--write).
"""

from __future__ import annotations

import argparse

import numpy as np


def trait_vector(model, pairs, layers):
    """{HF layer: unit trait vector} of the pairs on a loaded model (stf_jax.train_vector, mean_diff)."""
    from stf_jax import train_vector

    return dict(train_vector(model, pairs, layers=list(layers)).directions)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("maps")
    p.add_argument("--trait", default="formality")
    p.add_argument("--skip", type=int, default=24)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--write", help="write the source vector (x typical |h| per layer) as this .gguf")
    args = p.parse_args()

    from stf_jax.data import load_pairs
    from stf_jax.models.loading import load_model
    from stf_jax import SteeringVector
    from stf_jax.transfer import carry, fit_map, load_map_set

    loaded = load_map_set(args.maps)
    src, tgt = loaded.source["name"], loaded.target["name"]
    pairs = [q for q in load_pairs("shipped", traits=[args.trait])][args.skip: args.skip + args.n]
    ls = sorted({lm.layer_source for lm in loaded.maps.values()})
    lt = sorted(loaded.maps)
    v_s = trait_vector(load_model(src), pairs, ls)
    v_t = trait_vector(load_model(tgt), pairs, lt)
    h = loaded.header
    norms = {src: {lm.layer_source: lm.header["source"]["typical_norm"] for lm in loaded.maps.values()},
             tgt: {k: lm.header["target"]["typical_norm"] for k, lm in loaded.maps.items()}}
    layers = "depth" if len(loaded.maps) > 1 else ls[0]
    s = h["settings"]
    in_memory = fit_map(args.run, src, tgt, h["method"], layers, norms=norms, log=lambda *a: None,
                        k=s["k"], ridge=s["ridge"], rotation_only=s["rotation_only"])
    a = carry(in_memory, dict(v_s)).directions
    b = carry(loaded, dict(v_s)).directions
    identical = all(np.array_equal(a[k], b[k]) for k in a)
    for k in sorted(b):
        cos = lambda x: float(x @ v_t[k] / np.linalg.norm(x))  # noqa: E731
        print(f"{src} L{loaded.maps[k].layer_source} -> {tgt} L{k}: cosine to native {cos(b[k]):.3f} "
              f"(in memory {cos(a[k]):.3f})")
    print(f"{len(pairs)} new {args.trait} pairs (not in the run); carried vectors bit-identical in memory vs "
          f"loaded: {identical}")
    if args.write:
        SteeringVector({k: v_s[k] for k in ls}, model=src, model_type="llama", trait=args.trait,
                       units="typical_norm", typical_norms=norms[src]).to_residual(1.0).save(args.write)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
