"""Causal check of carried A/B behaviour vectors: does the target's behaviour move as with its own vector?

    python scripts/causal_kinds.py --run runs/mix/ab --traits power_seeking honesty

For each held-out behaviour (never in the shipped maps' training data) and each direction between the two
shipped models: the target's own vector (mean unit pair vector over the behaviour's training items) and the
source model's vector carried by the shipped map set, each steered at one target layer (the map's layer pair
nearest 2/3 depth; length = that layer's typical |h| × alpha). Effect: the slope over alpha of the
propensity for the behaviour-matching answer letter on the behaviour's held-out test items, in the A/B
protocol of Contrastive Activation Addition (prompt = the item up to "Answer:", continuations " (A)" /
" (B)"). Prints the slopes with bootstrap CIs and the effect ratio carried / native.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

MODELS = ("smollm2-135m", "gemma3-270m")


def ab_protocol(pair):
    """The item as prompt + answer continuation (CAA's A/B protocol)."""
    head, _, pos = pair.positive.rpartition("Answer:")
    _, _, neg = pair.negative.rpartition("Answer:")
    return dataclasses.replace(pair, prompt=head + "Answer:", positive=pos, negative=neg)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/mix/ab", help="extraction run of the A/B items, both models, all layers")
    p.add_argument("--traits", nargs="+", default=["power_seeking", "honesty"])
    p.add_argument("--alphas", type=float, nargs="+", default=[-0.3, -0.15, 0.15, 0.3])
    p.add_argument("--depth", type=float, default=0.67, help="relative depth of the steered target layer")
    args = p.parse_args(argv)

    from stf_jax.data import load_pairs
    from stf_jax.extract.store import load_layer, load_run_pairs
    from stf_jax.models.loading import load_model
    from stf_jax.steer.apply import steered_propensity
    from stf_jax.transfer import load_map_set, transfer

    run_pairs = load_run_pairs(args.run)
    test_pairs = {t: [ab_protocol(q) for q in load_pairs("ab", traits=[t]) if q.split == "test"] for t in args.traits}
    for src, tgt in (MODELS, MODELS[::-1]):
        ms = load_map_set(f"shipped:{src}->{tgt}")
        n_t = ms.target["n_layers"]
        lt = min(ms.maps, key=lambda lay: abs(lay / n_t - args.depth))
        lm = ms.maps[lt]
        ls, norm_t = lm.layer_source, float(lm.header["target"]["typical_norm"])
        model = load_model(tgt)
        for trait in args.traits:
            rows = np.array([q.trait == trait and q.split == "train" for q in run_pairs])

            def mean_vector(name, layer):
                v = load_layer(args.run, name, layer)["vectors"][rows].mean(0)
                return v / np.linalg.norm(v)

            native = mean_vector(tgt, lt) * norm_t
            carried = transfer(mean_vector(src, ls), ms, layer=ls, strength="unit")
            vecs = {"native": native, "carried": carried.directions[lt] * norm_t}
            res = {k: steered_propensity(model, {lt: v}, test_pairs[trait], args.alphas, scale="stored")["slope"]
                   for k, v in vecs.items()}
            cos = float(vecs["native"] @ vecs["carried"] / norm_t ** 2)
            print(f"{src} L{ls} -> {tgt} L{lt} {trait} (cos {cos:.2f}, coverage {carried.coverage[lt]:.2f}): "
                  + "; ".join(f"{k} slope {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" for k, r in res.items())
                  + f"; ratio {res['carried']['mean'] / res['native']['mean']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
