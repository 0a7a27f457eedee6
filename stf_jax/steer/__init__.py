"""Steering: injection modes as Intervention data, steered generation, and behavioural metrics (propensity).

    plain, steered, info = stf_jax.steer("gemma3-270m", "carried/formality.gguf", ["Tell me about the moon."])

`stf_jax.steer` is this package (`python -m stf_jax.steer`, its modules) and, called, the function `steer`
below (what `python -m stf_jax.steer generate` runs). Measured effects: `apply.steered_propensity` (one
vector on held-out pairs) and `evaluate.evaluate_steering` (native vs transferred vectors, with controls).
Names load lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

_LAZY = {
    "MODES": "inject", "make_intervention": "inject", "position_mask": "inject",
    "mean_logprobs": "propensity", "propensity": "propensity",
    "steered_completions": "apply", "steered_propensity": "apply",
}
__all__ = [*_LAZY, "steer"]


def steer(model, vector, prompts: str | Sequence[str], alpha: float | None = None, *, layer: int | None = None,
          trait: str | None = None, scale: str = "auto", **options: Any) -> tuple[list[str], list[str], dict]:
    """Unsteered and steered completions of `prompts`, with every layer of `vector` steered.

    model: a loaded Model or a name/path for `load_model`.
    vector: a `transfer` result (its .directions), a {HF layer: [d_model]} dict, a file (a .gguf/.safetensors
      control vector, a run's layer_<idx>.safetensors with `trait`, a .npy with `layer`), or an array with
      `layer` (an HF hidden-state index, 1..n_layers).
    scale: "stored" (alpha * v as stored: llama.cpp's and repeng's strength), "unit", "mean-norm" (alpha times
      the layer's mean |h|), or "auto" (mean-norm for a run's layer file, else stored) — as `steer generate`.
    alpha: the strength [1.0 stored, 0.15 otherwise]. options: mode ("additive", "replace", ...), dtype,
      steer_prompt, chat_template, max_new_tokens, temperature, top_p, seed.
    Returns (unsteered, steered, info {"layers", "scale", "alpha", "mean_norms"})."""
    from .apply import default_strength, steered_completions

    kind = "control_vector"
    if hasattr(vector, "directions"):
        directions = dict(vector.directions)
    elif isinstance(vector, dict):
        directions = dict(vector)
    elif isinstance(vector, (str, Path)):
        from .vectors import load_directions

        directions, kind = load_directions(vector, trait, layer)
    else:
        directions = {layer: vector}
    scale, alpha = default_strength(kind, scale, alpha)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    return steered_completions(model, prompts, directions, alpha, scale=scale, **options)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)


from .. import _callable_package  # noqa: E402

_callable_package(__name__, steer)
