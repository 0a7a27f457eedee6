"""Steer a model with a (multi-layer) vector and generate: what `python -m stf_jax.steer generate` runs.

    plain, steered, info = steered_completions("gemma3-270m", ["How do I boil an egg?"],
                                               {12: v12, 13: v13}, alpha=1.0, scale="stored")

Scales (additive mode): "stored" adds alpha * v with v as stored — llama.cpp's `--control-vector-scaled
FILE:alpha` and repeng's `set_control(v, alpha)` semantics, so one file steers alike in all three;
"unit" adds alpha * v/|v|; "mean-norm" adds alpha * mean|h| * v/|v|, mean|h| measured per layer on the
prompts as the model sees them (chat template included).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .export import SteeringInputError

SCALES = ("stored", "unit", "mean-norm")


def check_strength(alpha: float, limit: float = 1e6) -> float:
    """A finite strength of sane size: NaN/inf or |alpha| > limit is an input error, not a degenerate run."""
    alpha = float(alpha)
    if not np.isfinite(alpha) or abs(alpha) > limit:
        raise SteeringInputError(f"strength alpha = {alpha} is not a usable number; give a finite value with "
                                 f"|alpha| <= {limit:g} (0.1-0.3 with --scale mean-norm, ~1 for stored vectors)")
    return alpha


def steered_completions(model, prompts: Sequence[str], directions: dict[int, np.ndarray], alpha: float,
                        scale: str = "stored", mode: str = "additive", dtype: str = "float32",
                        steer_prompt: bool = True, chat_template: bool = False, **generation: Any
                        ) -> tuple[list[str], list[str], dict[str, Any]]:
    """(unsteered, steered completions, info) with every layer of `directions` ({HF layer: [d_model]}) steered.

    model: a Model or a name/path for `load_model`. generation: max_new_tokens, temperature, top_p, seed."""
    from ..models.generate import generate
    from ..models.loading import load_model
    from .inject import make_intervention, position_mask, residual_norms

    if scale not in SCALES:
        raise SteeringInputError(f"scale {scale!r}: choose from {list(SCALES)}")
    alpha = check_strength(alpha)
    if isinstance(model, str):
        model = load_model(model, dtype=dtype)
    cfg = model.config
    if chat_template and getattr(model.tokenizer, "chat_template", None) is None:
        raise SteeringInputError("this model's tokenizer has no chat template; drop --chat-template")
    layers = sorted(directions)
    for lay in layers:
        v = np.asarray(directions[lay])
        if v.shape != (cfg.d_model,):
            raise SteeringInputError(f"the vector for layer {lay} has shape {v.shape} but the model has d_model "
                                     f"{cfg.d_model}: transfer it first (python -m stf_jax.transfer apply)")
        if not 1 <= lay <= cfg.n_layers:
            raise SteeringInputError(f"layer {lay} is outside the model's block outputs 1..{cfg.n_layers}")
    vectors = np.stack([np.asarray(directions[lay], np.float32) for lay in layers])
    info: dict[str, Any] = {"layers": layers, "scale": scale, "alpha": alpha}
    layer_scale = None
    if mode == "additive" and scale == "mean-norm":
        texts = [model.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                      add_generation_prompt=True) for p in prompts] \
            if chat_template else list(prompts)
        ids, mask = model.encode(texts, add_special_tokens=not chat_template)
        h = np.asarray(model.hidden_states(ids, mask, layers))  # [L, B, S, D]
        layer_scale = []
        for j in range(len(layers)):
            total, count = residual_norms(h[j], mask)
            layer_scale.append(total / max(count, 1))
        info["mean_norms"] = layer_scale

    def steering(mask):
        return make_intervention(cfg, layers, vectors, alpha, position_mask(mask), mode=mode,
                                 scale=layer_scale, normalize=not (mode == "additive" and scale == "stored"))

    common = dict(chat_template=chat_template, **generation)
    plain = generate(model, prompts, **common)
    steered = generate(model, prompts, intervention_for=steering, steer_prompt=steer_prompt, **common)
    return plain, steered, info
