"""Steering modes as `Intervention` data: one compiled program serves every layer, vector and strength.

Modes, applied to the residual stream h after the chosen blocks (HF index i = output of block i):
    additive          h + alpha * v_hat          (v_hat = v / |v|, times `scale` if given)
    replace           v                          (the state is replaced by the vector)
    replace_norm      |h| * v_hat                (replacement, norm matched to the native state)
    blend             (1 - alpha) * h + alpha * v
Positions: every position, positions >= `start`, or an explicit [batch, seq] mask (e.g. generated
tokens only).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ..models.config import DecoderConfig
from ..models.decoder import Intervention

MODES = ("additive", "replace", "replace_norm", "blend")


def position_mask(attention_mask: np.ndarray, start: int | None = None) -> np.ndarray:
    """[B, S] float mask of real tokens, optionally only those at token index >= start of each row
    (counted from the row's first real token, so left padding is handled)."""
    mask = np.asarray(attention_mask).astype(bool)
    if start is None:
        return mask.astype(np.float32)
    index = np.cumsum(mask, axis=-1) - 1  # position of each real token within its row
    return (mask & (index >= start)).astype(np.float32)


def make_intervention(cfg: DecoderConfig, layers: Sequence[int], vector: np.ndarray, alpha: float,
                      positions: np.ndarray, mode: str = "additive", scale: float | np.ndarray | None = None,
                      normalize: bool = True) -> Intervention:
    """An Intervention steering hidden-state indices `layers` (HF convention, 1..n_layers).

    vector: [d_model] (the same for every layer) or [len(layers), d_model].
    scale: for additive steering, multiply the unit vector by this (e.g. the layer's mean |h|); one value,
      or one per layer.
    normalize=False (additive): add alpha * vector as stored, llama.cpp's and repeng's semantics for
      control vectors (their stored lengths carry meaning); scale must then be None.
    """
    if mode not in MODES:
        raise ValueError(f"steering mode {mode!r} is not one of {', '.join(MODES)}")
    layers = cfg.resolve_layers(layers)
    if 0 in layers:
        raise ValueError("hidden-state index 0 is the embeddings: steer block outputs (1..n_layers)")
    vector = np.asarray(vector, np.float32)
    if vector.shape not in ((cfg.d_model,), (len(layers), cfg.d_model)):
        raise ValueError(f"vector shape {vector.shape} does not fit {len(layers)} layer(s) of d_model {cfg.d_model}")
    vectors = np.broadcast_to(vector, (len(layers), cfg.d_model))
    if not np.isfinite(vectors).all():
        raise ValueError("steering vector contains NaN or Inf")
    if not np.isfinite(alpha):
        raise ValueError(f"steering strength alpha = {alpha} is not finite")
    scales = np.broadcast_to(np.asarray(1.0 if scale is None else scale, np.float64), (len(layers),))
    if not normalize and scale is not None:
        raise ValueError("scale applies to normalised vectors; drop it or normalise")
    L = cfg.n_layers
    v = np.zeros((L, cfg.d_model), np.float32)
    add, keep, norm_match = (np.zeros(L, np.float32) for _ in range(3))
    for row, layer, layer_scale in zip(vectors, layers, scales):
        block = layer - 1  # hidden_states[i] is the output of block i - 1 (0-based)
        unit = row / max(float(np.linalg.norm(row)), 1e-12)
        if mode == "additive":
            v[block] = unit * float(layer_scale) if normalize else row
            add[block] = alpha
        elif mode == "replace":
            v[block], keep[block], add[block] = row, -1.0, 1.0
        elif mode == "replace_norm":
            v[block], keep[block], norm_match[block] = row, -1.0, 1.0
        else:  # blend
            v[block], keep[block], add[block] = row, -alpha, alpha
    return Intervention(jnp.asarray(v), jnp.asarray(add), jnp.asarray(keep), jnp.asarray(norm_match),
                        jnp.asarray(positions, jnp.float32))


def row_intervention(cfg, layer: int, row_vectors: np.ndarray, positions: np.ndarray):
    """Additive steering at hidden-state index `layer` with one vector per row: row_vectors [B, D] already
    scaled (alpha · scale · unit vector; zeros = unsteered)."""
    (b, d) = row_vectors.shape
    vectors = np.zeros((cfg.n_layers, b, 1, d), np.float32)
    vectors[layer - 1, :, 0, :] = row_vectors
    return Intervention.per_row(vectors, positions)
