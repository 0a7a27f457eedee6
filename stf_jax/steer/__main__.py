r"""python -m stf_jax.steer: steer a model, evaluate steering causally, export vectors.

  generate  steered and unsteered completions side by side
      python -m stf_jax.steer generate --model gemma3-270m \
          --vector runs/shipped_all/gemma3-270m/layer_013.safetensors --trait verbosity \
          --alpha 0.3 "Tell me about the moon."
  eval      alpha-sweep propensity curves, native vs transferred vectors, controls, bootstrap CIs
      python -m stf_jax.steer eval runs/shipped_all --sweep runs/align/sweep/results.json --out runs/steer
            or one vector file (every layer it holds), on held-out pairs of its trait:
      python -m stf_jax.steer eval --vector carried/formality.gguf --model gemma3-270m --trait formality \
          --skip 40 --pairs-per-trait 16 --alphas -8 8
  calibrate the layer and strength for a vector: effect on held-out pairs, fluency guard; the chosen
            strength stored in the file, so llama.cpp's FILE:1 and `generate --alpha 1` apply it
      python -m stf_jax.steer calibrate --model smollm2-135m --vector formality.gguf --trait formality \
          --out cal/formality
  export    a trait vector as a llama.cpp control-vector GGUF (or safetensors)
      python -m stf_jax.steer export --vector runs/shipped_all/gemma3-270m/layer_013.safetensors \
          --trait verbosity --out verbosity.gguf
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path


def _add_generate_parser(sub) -> None:
    gen = sub.add_parser("generate", help="steered and unsteered completions side by side")
    gen.add_argument("prompts", nargs="+", help="prompt texts")
    gen.add_argument("--model", required=True, help="registry name, HF directory, hub id or .gguf path")
    gen.add_argument("--vector", required=True,
                     help="a control vector (.gguf from stf_jax, llama.cpp or repeng, or .safetensors: every layer "
                          "it holds is steered), a run's <model>/layer_<idx>.safetensors, or a .npy vector")
    gen.add_argument("--trait", help="average only this trait's pair vectors (run layer files)")
    gen.add_argument("--layer", help="HF hidden-state index to steer: 12, -6 (from the end) or 0.67 (relative "
                                      "depth) [every layer of a control vector; a run file's layer]")
    gen.add_argument("--alpha", type=float, default=None,
                     help="strength. --scale stored: adds alpha * v as stored (llama.cpp's/repeng's strength) "
                          "[1.0]; mean-norm: adds alpha * mean|h| along v (0.1-0.3 is noticeable, > 1 "
                          "overwhelms the model) [0.15]; blend mixes (1 - alpha) h + alpha v")
    gen.add_argument("--mode", default="additive", choices=["additive", "replace", "replace_norm", "blend"],
                     help="injection mode [additive]")
    gen.add_argument("--scale", choices=["auto", "stored", "unit", "mean-norm"], default="auto",
                     help="additive: the vector as stored (llama.cpp/repeng semantics), its unit vector, or its unit "
                          "vector times the layer's mean |h| on the prompts [auto: stored for control vectors and "
                          ".npy, mean-norm for a run's layer file]")
    gen.add_argument("--generated-only", action="store_true", help="steer generated tokens only, not the prompt")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy [0]")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--chat-template", action="store_true", help="wrap prompts in the model's chat template")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])


def main(argv=None) -> int:
    from .calibrate_cli import add_calibrate_parser, run_calibrate
    from .evaluate import add_eval_parser, run_eval
    from .export_cli import add_export_parser, run_export

    parser = argparse.ArgumentParser(prog="python -m stf_jax.steer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate_parser(sub)
    add_eval_parser(sub)
    add_export_parser(sub)
    add_calibrate_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        return run_calibrate(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "export":
        return run_export(args)
    return run_generate(args, parser)


def run_generate(args, parser) -> int:
    """Unsteered and steered completions of each prompt, printed side by side."""
    from ..core.layers import parse_layer_spec, resolve_layer
    from ..models.loading import load_model
    from . import steer

    if args.layer is not None:
        parse_layer_spec(args.layer)  # a malformed spec fails before the model loads
    if Path(args.vector).suffix == ".npy" and args.layer is None:
        parser.error("--layer is required for a .npy vector")
    from .vectors import load_vector

    # a bad vector file fails at once, before the model loads (a first load converts and caches the model)
    load_vector(args.vector, args.trait, 1 if Path(args.vector).suffix == ".npy" else None)
    model = load_model(args.model, dtype=args.dtype)
    layer = None if args.layer is None else resolve_layer(args.layer, model.config.n_layers, args.model, flag="--layer")
    plain, steered, info = steer(  # the library call: one default strength for both
        model, args.vector, args.prompts, args.alpha, layer=layer, trait=args.trait, scale=args.scale, mode=args.mode,
        dtype=args.dtype, steer_prompt=not args.generated_only, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, chat_template=args.chat_template)
    alpha, scale = info["alpha"], info["scale"]
    how = f"{args.mode}, alpha {alpha}, layers {info['layers']}, {scale}" + (
        f", mean |h| {', '.join(f'{h:.1f}' for h in info['mean_norms'])}" if info.get("mean_norms") else "")
    width = 60
    for prompt, a, b in zip(args.prompts, plain, steered):
        print(f"\nprompt: {prompt!r}")
        print(f"{'unsteered':<{width}} | steered ({how})")
        print("-" * width + "-+-" + "-" * width)
        left, right = textwrap.wrap(a, width) or [""], textwrap.wrap(b, width) or [""]
        for i in range(max(len(left), len(right))):
            la = left[i] if i < len(left) else ""
            rb = right[i] if i < len(right) else ""
            print(f"{la:<{width}} | {rb}")
    return 0


if __name__ == "__main__":
    from ..errors import cli_main

    cli_main(main)
