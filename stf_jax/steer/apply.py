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

from ..core.chat import chat_text
from ..errors import SteeringInputError

SCALES = ("stored", "unit", "mean-norm")


def check_strength(alpha: float, limit: float = 1e6) -> float:
    """A finite strength of sane size: NaN/inf or |alpha| > limit is an input error, not a degenerate run."""
    alpha = float(alpha)
    if not np.isfinite(alpha) or abs(alpha) > limit:
        raise SteeringInputError(f"strength alpha = {alpha} is not a usable number; give a finite value with "
                                 f"|alpha| <= {limit:g} (0.1-0.3 on the mean-norm scale, ~1 for stored vectors)")
    return alpha


def _layer_stack(cfg, directions: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    """(sorted HF layers, vectors [n_layers, d_model]) checked against the model."""
    layers = sorted(directions)
    if not layers or None in directions:
        raise SteeringInputError("no layer to steer: give the layer of a single vector (layer=)")
    for lay in layers:
        v = np.asarray(directions[lay])
        if v.shape != (cfg.d_model,):
            raise SteeringInputError(f"the vector for layer {lay} has shape {v.shape} but the model has d_model "
                                     f"{cfg.d_model}: transfer it first (python -m stf_jax.transfer apply)")
        if not 1 <= lay <= cfg.n_layers:
            raise SteeringInputError(f"layer {lay} is outside the model's block outputs 1..{cfg.n_layers}")
    return layers, np.stack([np.asarray(directions[lay], np.float32) for lay in layers])


def _mean_norms(model, texts: Sequence[str], layers: Sequence[int], add_special_tokens: bool = True) -> list[float]:
    """Each layer's typical |h| over the texts as the model sees them (core.norms), in `layers` order."""
    from ..core.norms import typical_norms

    norms = typical_norms(model, texts, layers, batch=None, add_special_tokens=add_special_tokens)
    return [norms[int(lay)] for lay in layers]


def default_strength(kind: str, scale: str, alpha: float | None) -> tuple[str, float]:
    """(scale, alpha) with the defaults `steer generate` and `stf_jax.steer` share: scale "auto" is
    "mean-norm" for a run's layer file (unit vectors) and "stored" for a control vector; alpha defaults to
    1.0 at the stored strength (llama.cpp's and repeng's) and to 0.15 x mean |h| otherwise."""
    if scale == "auto":
        scale = "mean-norm" if kind == "run" else "stored"
    return scale, (alpha if alpha is not None else (1.0 if scale == "stored" else 0.15))


def steered_completions(model, prompts: Sequence[str], directions: dict[int, np.ndarray], alpha: float,
                        scale: str = "stored", mode: str = "additive", dtype: str = "float32",
                        steer_prompt: bool = True, chat_template: bool = False,
                        gains: dict[int, float] | None = None, **generation: Any
                        ) -> tuple[list[str], list[str], dict[str, Any]]:
    """(unsteered, steered completions, info) with every layer of `directions` ({HF layer: [d_model]}) steered.

    model: a Model or a name/path for `load_model`. gains {HF layer: g} (scale mean-norm): steer layer L at
    g x alpha x mean |h| (a typical-|h| vector's length; 1 for unit vectors). generation: max_new_tokens,
    temperature, top_p, seed."""
    from ..models.generate import generate
    from ..models.loading import load_model
    from .inject import make_intervention, position_mask

    if scale not in SCALES:
        raise SteeringInputError(f"scale {scale!r}: choose from {list(SCALES)}")
    alpha = check_strength(alpha)
    if isinstance(model, str):
        model = load_model(model, dtype=dtype)
    cfg = model.config
    if chat_template and getattr(model.tokenizer, "chat_template", None) is None:
        raise SteeringInputError("this model's tokenizer has no chat template; drop chat_template=")
    layers, vectors = _layer_stack(cfg, directions)
    info: dict[str, Any] = {"layers": layers, "scale": scale, "alpha": alpha}
    layer_scale = None
    if mode == "additive" and scale == "mean-norm":
        texts = [chat_text(model.tokenizer, p) for p in prompts] if chat_template else list(prompts)
        layer_scale = _mean_norms(model, texts, layers, add_special_tokens=not chat_template)
        info["mean_norms"] = layer_scale  # as measured; the vector's own lengths (gains) multiply it below
        if gains and any(abs(gains[lay] - 1.0) > 1e-6 for lay in layers):
            layer_scale = [s * gains[lay] for s, lay in zip(layer_scale, layers)]

    def steering(mask):
        return make_intervention(cfg, layers, vectors, alpha, position_mask(mask), mode=mode,
                                 scale=layer_scale, normalize=not (mode == "additive" and scale == "stored"))

    common = dict(chat_template=chat_template, **generation)
    plain = generate(model, prompts, **common)
    steered = generate(model, prompts, intervention_for=steering, steer_prompt=steer_prompt, **common)
    return plain, steered, info


def steered_propensity(model, directions: dict[int, np.ndarray], pairs: Sequence, alphas: Sequence[float],
                       scale: str = "stored", dtype: str = "float32", n_boot: int = 1000, seed: int = 0,
                       batch_size: int = 16) -> dict[str, Any]:
    """The causal read-out of `steer eval` for any vector: each pair's propensity (token-normalised
    log P(positive | prompt) - log P(negative | prompt)) with every layer of `directions` steered (additive,
    all positions) at each alpha, and the slope of propensity over alpha with a bootstrap interval over pairs.

    pairs: ContrastPairs (prompt, positive, negative) held out from whatever made the vector. scale as in
    `steered_completions` (mean-norm measures |h| on the pairs' prompts). Returns {"alphas", "curves" [A, P]
    (lists), "slope" {mean, lo, hi}, "curve" {mean, lo, hi} per alpha, "layers", "scale", "n_pairs"}."""
    from ..models.loading import load_model
    from .inject import make_intervention, position_mask
    from .propensity import propensity
    from ..core.stats import bootstrap, curve_ci, slopes

    if scale not in SCALES:
        raise SteeringInputError(f"scale {scale!r}: choose from {list(SCALES)}")
    alphas = np.unique(np.asarray([check_strength(a) for a in alphas] + [0.0], np.float64))
    if len(pairs) < 2:
        raise SteeringInputError(f"{len(pairs)} pair(s) to score; give >= 2 (the interval resamples pairs)")
    if isinstance(model, str):
        model = load_model(model, dtype=dtype)
    cfg = model.config
    layers, vectors = _layer_stack(cfg, directions)
    prompts = [p.prompt for p in pairs]
    layer_scale = _mean_norms(model, prompts, layers) if scale == "mean-norm" else None
    curves = []
    for a in alphas:
        def steering(mask, a=float(a)):
            return make_intervention(cfg, layers, vectors, a, position_mask(mask),
                                     scale=layer_scale, normalize=scale != "stored")
        curves.append(propensity(model, prompts, [p.positive for p in pairs], [p.negative for p in pairs],
                                 steering if a != 0 else None, batch_size))
    curves = np.stack(curves)  # [A, P]
    per_pair = slopes(alphas, curves)
    return {"alphas": alphas.tolist(), "curves": curves.tolist(), "layers": layers, "scale": scale,
            "n_pairs": len(pairs), "slope": bootstrap(lambda i: float(per_pair[i].mean()), len(pairs), n_boot, seed),
            "curve": curve_ci(curves, n_boot, seed), **({"mean_norms": layer_scale} if layer_scale else {})}
