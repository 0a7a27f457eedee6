"""Steering: injection modes as Intervention data, steered generation, and behavioural metrics (propensity).

    plain, steered, info = stf_jax.steer("gemma3-270m", "carried/formality.gguf", ["Tell me about the moon."])

`stf_jax.steer` is this package (`python -m stf_jax.steer`, its modules) and, called, the function `steer`
below (what `python -m stf_jax.steer generate` runs). Measured effects: `apply.steered_propensity` (one
vector on held-out pairs) and `evaluate.evaluate_steering` (native vs transferred vectors, with controls).
`calibration.calibrate` (`stf_jax.calibrate`) chooses layer and strength for a vector; `fluency` is the guard.
Names load lazily.
"""

from __future__ import annotations

from typing import Any, Sequence

_LAZY = {
    "MODES": "inject", "make_intervention": "inject", "position_mask": "inject",
    "mean_logprobs": "propensity", "propensity": "propensity",
    "steered_completions": "apply", "steered_propensity": "apply",
    "calibrate": "calibration", "CalibrateOptions": "calibration", "Calibration": "calibration",
}
__all__ = [*_LAZY, "steer"]


def steer(model, vector, prompts: str | Sequence[str], alpha: float | None = None, *, layer: int | None = None,
          trait: str | None = None, scale: str = "auto", **options: Any) -> tuple[list[str], list[str], dict]:
    """Unsteered and steered completions of `prompts`, with every layer of `vector` steered.

    model: a loaded Model or a name/path for `load_model`.
    vector: a SteeringVector (trained, carried or loaded), a file (a .gguf/.safetensors control vector, a
      run's layer_<idx>.safetensors with `trait`, a .npy with `layer`), a {HF layer: [d_model]} dict, or an
      array with `layer` (an HF hidden-state index, 1..n_layers).
    Strength, the one default everywhere (`steer generate` too): a vector in typical-|h| units (trained,
      carried from one, or a run's trait vector) adds alpha x the layer's mean |h| x v, alpha 0.15 by default
      (`SteeringVector.DEFAULT_STRENGTH`), so `v * 2` steers twice as hard; a vector in residual units (any
      file, llama.cpp's and repeng's meaning) adds alpha x v as stored, alpha 1.0 by default.
    scale: "auto" (the above), or force "stored", "unit" or "mean-norm" (alpha x mean |h| x v/|v|).
    options: mode ("additive", "replace", ...), dtype, steer_prompt, chat_template, max_new_tokens,
      temperature, top_p, seed.
    Returns (unsteered, steered, info {"layers", "scale", "alpha", "mean_norms"})."""
    from .apply import default_strength, steered_completions
    from .vectors import as_vector

    vector = as_vector(vector, layer, trait)
    relative = vector.units == "typical_norm"
    scale, alpha = default_strength("run" if relative else "control_vector", scale, alpha)
    if scale == "stored" and all(abs(n - 1.0) < 1e-3 for n in vector.norms.values()):
        import warnings

        warnings.warn("steering with unit-length vectors in residual units at their stored strength: a length of "
                      f"{alpha:g} against a residual stream whose |h| is typically 10-10,000 barely moves the text; "
                      "give scale='mean-norm' (alpha in units of |h|, 0.15 is noticeable) or a larger alpha",
                      UserWarning, stacklevel=2)
    gains = vector.norms if relative and scale == "mean-norm" else None
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    return steered_completions(model, prompts, vector.directions, alpha, scale=scale, gains=gains, **options)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)


from .. import _callable_package  # noqa: E402

_callable_package(__name__, steer)
