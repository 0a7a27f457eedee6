r"""python -m stf_jax.steer: steer a model, evaluate steering causally, export vectors.

  generate  steered and unsteered completions side by side
      python -m stf_jax.steer generate --model gemma3-270m \
          --vector runs/shipped_all/gemma3-270m/layer_013.safetensors --trait verbosity \
          --alpha 0.3 "Tell me about the moon."
  eval      alpha-sweep propensity curves, native vs transferred vectors, controls, bootstrap CIs
      python -m stf_jax.steer eval runs/shipped_all --sweep runs/align/sweep/results.json --out runs/steer
  export    a trait vector as a llama.cpp control-vector GGUF (or safetensors)
      python -m stf_jax.steer export --vector runs/shipped_all/gemma3-270m/layer_013.safetensors \
          --trait verbosity --out verbosity.gguf
"""

from __future__ import annotations

import argparse
import sys
import textwrap


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stf_jax.steer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="steered and unsteered completions side by side")
    gen.add_argument("prompts", nargs="+", help="prompt texts")
    gen.add_argument("--model", required=True, help="registry name, HF directory, hub id or .gguf path")
    gen.add_argument("--vector", required=True, help="a run's <model>/layer_<idx>.safetensors, or a .npy vector")
    gen.add_argument("--trait", help="average only this trait's pair vectors (run layer files)")
    gen.add_argument("--layer", type=int, help="HF hidden-state index to steer [the vector file's layer]")
    gen.add_argument("--alpha", type=float, default=0.15,
                     help="strength: with --scale mean-norm, additive adds alpha * mean|h| along v (0.1-0.3 is "
                          "noticeable, > 1 overwhelms the model); blend mixes (1 - alpha) h + alpha v [0.15]")
    gen.add_argument("--mode", default="additive", choices=["additive", "replace", "replace_norm", "blend"],
                     help="injection mode [additive]")
    gen.add_argument("--scale", choices=["unit", "mean-norm"], default="mean-norm",
                     help="additive: unit vector, or scaled to the layer's mean |h| on the prompts [mean-norm]")
    gen.add_argument("--generated-only", action="store_true", help="steer generated tokens only, not the prompt")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy [0]")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--chat-template", action="store_true", help="wrap prompts in the model's chat template")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])

    from .evaluate import add_eval_parser, run_eval
    from .export import add_export_parser, run_export

    add_eval_parser(sub)
    add_export_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "export":
        return run_export(args)

    import numpy as np

    from ..models.generate import generate
    from ..models.loading import load_model
    from .inject import make_intervention, position_mask, residual_norms
    from .vectors import load_steering_vector

    model = load_model(args.model, dtype=args.dtype)
    if args.chat_template and getattr(model.tokenizer, "chat_template", None) is None:
        parser.error(f"{args.model}'s tokenizer has no chat template; drop --chat-template")
    vector, file_layer = load_steering_vector(args.vector, args.trait)
    layer = args.layer if args.layer is not None else file_layer
    if layer is None:
        parser.error("--layer is required for a .npy vector")
    layer = model.resolve_layers([layer])[0]
    if vector.shape != (model.config.d_model,):
        parser.error(f"the vector has {vector.shape[0]} dims but {args.model} has d_model {model.config.d_model}: "
                     "transfer it first (python -m stf_jax.align)")
    scale = None
    if args.mode == "additive" and args.scale == "mean-norm":
        ids, mask = model.encode(args.prompts)
        total, count = residual_norms(np.asarray(model.hidden_states(ids, mask, [layer]))[0], mask)
        scale = total / max(count, 1)

    def steering(mask):
        return make_intervention(model.config, [layer], vector, args.alpha, position_mask(mask),
                                 mode=args.mode, scale=scale)

    common = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                  seed=args.seed, chat_template=args.chat_template)
    plain = generate(model, args.prompts, **common)
    steered = generate(model, args.prompts, intervention_for=steering, steer_prompt=not args.generated_only, **common)
    width = 60
    how = f"{args.mode}, alpha {args.alpha}, layer {layer}" + (f", |v| = mean |h| = {scale:.1f}" if scale else "")
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
    sys.exit(main())
