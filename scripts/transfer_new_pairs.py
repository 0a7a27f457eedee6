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
    """{HF layer: unit mean of the pairs' unit difference vectors}, last-token pooling like extraction."""
    out = {}
    ids_p, mask_p = model.encode([p.positive for p in pairs], padding_side="left")
    ids_n, mask_n = model.encode([p.negative for p in pairs], padding_side="left")
    hp = np.asarray(model.hidden_states(ids_p, mask_p, layers))[:, :, -1]  # [L, B, D] last token (left pad)
    hn = np.asarray(model.hidden_states(ids_n, mask_n, layers))[:, :, -1]
    for j, lay in enumerate(layers):
        d = hp[j] - hn[j]
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        m = d.mean(0)
        out[lay] = (m / np.linalg.norm(m)).astype(np.float32)
    return out


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
    from stf_jax.steer.export import export_control_vector
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
        export_control_vector(args.write, {k: v_s[k] * norms[src][k] for k in ls}, model_hint="llama",
                              metadata={"trait": args.trait, "source_model": src,
                                        "scale": "x typical |h| per layer"})
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
