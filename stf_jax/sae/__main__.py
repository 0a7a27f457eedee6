"""python -m stf_jax.sae: sparse autoencoders on one layer of a model (train, evaluate).

Examples:
  python -m stf_jax.sae train --model smollm2-135m --layer 15 --corpus shipped --latents 8x --k 32 --out sae/s15
  python -m stf_jax.sae eval --model smollm2-135m --sae sae/s15/sae           # also an sae-lens directory

`train` streams the layer's token states over the corpus through a bounded shuffle buffer, trains with
optax Adam (checkpoints under OUT/checkpoints; the same command resumes), then measures the SAE on held-out
text (every 10th text): FVU, L0, dead latents, CE loss recovered. OUT/sae is an sae-lens directory
(cfg.json + sae_weights.safetensors): `sae_lens.SAE.load_from_disk("OUT/sae")` reads it.
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from ..options import add_fields, fields_from_args
from .train import TrainOptions

HELPS = {
    "latents": "SAE width: a multiple of the model width (8x) or a count (4608)",
    "architecture": "topk (default) or standard (ReLU + L1)",
    "k": "active latents per token (topk)",
    "l1_coefficient": "L1 weight (standard)",
    "tokens": "training tokens (the corpus is reread, reshuffled, until spent)",
    "batch": "tokens per optimizer step",
    "lr": "peak Adam learning rate (warm-up, then linear decay over the last fifth)",
    "buffer": "shuffle-buffer capacity in tokens (memory: buffer x d_model floats)",
    "dead_after": "tokens without firing after which a latent counts as dead (AuxK revives it)",
    "text_batch": "texts per forward pass of the model",
    "max_length": "tokens per text (longer texts are cut)",
    "checkpoint_every": "steps between checkpoints",
    "eval_texts": "held-out texts the quality figures are measured on",
    "seed": "initialization and shuffling seed",
    "progress": "progress bar",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stf_jax.sae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train an SAE on one layer's token states")
    tr.add_argument("--model", required=True, help="registry name, HF directory or .gguf path")
    tr.add_argument("--layer", required=True, help="the residual stream entering this block (15, -6, 0.5)")
    tr.add_argument("--corpus", default="shipped", help="'shipped' (the shipped pairs' texts and general corpus), "
                                                        "a .txt (one text per line) or .jsonl ('text' field) [shipped]")
    tr.add_argument("--out", required=True, help="output directory (OUT/sae: the SAE; OUT/training.json: figures)")
    add_fields(tr, TrainOptions, HELPS)
    ev = sub.add_parser("eval", help="quality figures of a saved SAE (stf_jax or sae-lens) on held-out text")
    ev.add_argument("--model", required=True)
    ev.add_argument("--sae", required=True, help="an SAE directory (cfg.json + sae_weights.safetensors)")
    ev.add_argument("--layer", help="the layer it reads [from the SAE's files]")
    ev.add_argument("--corpus", default="shipped")
    ev.add_argument("--max-length", type=int, default=256)
    ev.add_argument("--eval-texts", type=int, default=400, help="held-out texts to measure on [400]")
    fe = sub.add_parser("features", help="the SAE latents a steering vector loads on, with their top texts")
    fe.add_argument("--model", required=True)
    fe.add_argument("--sae", required=True, help="an SAE directory")
    fe.add_argument("--vector", required=True, help="a steering vector file (.gguf/.safetensors) with a direction "
                                                    "at the SAE's layer")
    fe.add_argument("--top", type=int, default=10, help="latents to show [10]")
    fe.add_argument("--texts", type=int, default=5, help="top-activating tokens per latent [5]")
    fe.add_argument("--corpus", default="shipped", help="texts to find the top activations in [shipped]")
    fe.add_argument("--out", help="also write features.json and features.md here")
    la = sub.add_parser("latent", help="one latent's decoder direction as a steering vector file")
    la.add_argument("--sae", required=True)
    la.add_argument("--latent", type=int, required=True)
    la.add_argument("--out", required=True, help="the vector file (.gguf for llama.cpp, or .safetensors)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..models.loading import load_model
    from .activations import corpus_texts, split_texts

    if args.command == "latent":
        return _latent(args)
    texts = corpus_texts(args.corpus)  # a bad corpus fails before the model loads
    if args.command == "features":
        return _features(args, texts)
    if args.command == "train":
        from .train import train_sae

        opts = TrainOptions(**fields_from_args(args, HELPS))
        model = load_model(args.model)
        summary = train_sae(model, _layer(args.layer, model), texts, args.out, opts)
        print(_line(summary))
        return 0
    from .quality import sae_quality
    from .saelens import load_sae

    cfg, params, _ = load_sae(args.sae)
    model = load_model(args.model)
    _check_width(cfg, model, args.sae)
    layer = _layer(args.layer if args.layer is not None else cfg.layer, model)
    held = split_texts(texts)[1][:args.eval_texts]
    print(json.dumps(sae_quality(model, cfg, params, held, layer, max_length=args.max_length)))
    return 0


def _features(args, texts) -> int:
    from ..core.vector import SteeringVector
    from ..models.loading import load_model
    from .features import FeatureInputError, features_markdown, top_activations, vector_features
    from .saelens import load_sae

    cfg, params, _ = load_sae(args.sae)
    vector = SteeringVector.load(args.vector)
    if cfg.layer not in vector.directions:
        raise FeatureInputError(f"{args.vector} has no direction at layer {cfg.layer}, the layer {args.sae} reads "
                                f"(it has {sorted(vector.directions)})")
    model = load_model(args.model)
    _check_width(cfg, model, args.sae)
    loads = vector_features(cfg, params, vector.directions[cfg.layer], args.top)
    tops = top_activations(model, cfg, params, texts, [f["latent"] for f in loads], cfg.layer, n=args.texts)
    for f in loads:
        f["top_activations"] = tops[f["latent"]]
    md = features_markdown(args.vector, args.sae, cfg.layer, loads)
    print(md)
    if args.out:
        from pathlib import Path

        from ..core.atomic import atomic_write_json, atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "features.json", {"vector": str(args.vector), "sae": str(args.sae), "layer": cfg.layer,
                                                  "model": model.name, "features": loads})
        atomic_write_text(out / "features.md", md)
    return 0


def _latent(args) -> int:
    from .features import latent_vector
    from .saelens import load_sae

    cfg, params, _ = load_sae(args.sae)
    path = latent_vector(cfg, params, args.latent).save(args.out)
    print(f"wrote {path}: latent {args.latent}'s decoder direction at layer {cfg.layer} (unit length; steer with "
          f"python -m stf_jax.steer generate --vector {path} --alpha ...)")
    return 0


def _layer(spec, model) -> int:
    """One layer the SAE can read and be evaluated at: 1 .. n_layers - 1 (a block above it must exist)."""
    from ..core.layers import resolve_layer
    from .train import SAETrainError

    n = model.config.n_layers
    layer = resolve_layer(str(spec), n, model.name, flag="--layer")
    if not 1 <= layer < n:
        raise SAETrainError(f"--layer {spec}: an SAE reads the stream entering a block, 1 .. {n - 1} for {model.name}")
    return layer


def _check_width(cfg, model, where) -> None:
    from .train import SAETrainError

    if cfg.d_in != model.config.d_model:
        raise SAETrainError(f"{where}: this SAE reads {cfg.d_in}-wide states, {model.name} has {model.config.d_model}; "
                            "give the model it was trained on" + (f" ({cfg.model})" if cfg.model else ""))


def _line(s: dict) -> str:
    return (f"{s['model']} layer {s['layer']}: {s['d_sae']} latents ({s['architecture']}, k {s['k']}), "
            f"{s['tokens_trained']:,} tokens in {s['seconds']:.0f}s ({s['tokens_per_second']:,.0f} tokens/s); "
            f"held-out FVU {s['fvu']:.3f}, L0 {s['l0']:.1f}, dead {s['dead_fraction_heldout']:.1%}, "
            f"CE loss recovered {s['ce_loss_recovered']:.3f} (clean {s['ce_clean']:.3f}, SAE {s['ce_sae']:.3f}, "
            f"zero {s['ce_zero']:.3f})")


if __name__ == "__main__":
    from ..errors import cli_main

    cli_main(main)
