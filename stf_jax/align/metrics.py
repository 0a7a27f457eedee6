"""Transfer metrics: cosine of T(v_s) with the target's own v_t, raw and after removing the target mean.

Raw cosine rewards predicting the mean direction shared by all vectors (a map that outputs μ_t for every
input already scores cos(μ_t, v_t)); the centered cosine (T(v_s) − μ_t vs v_t − μ_t) only credits what
is specific to the pair, so it is the number a transfer method must win on. μ_t is the target's training
mean. A prediction equal to μ_t has no centered direction and scores 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .ops import safe_div


class RowStats(NamedTuple):
    """Per-row dot products and squared norms; both cosines follow from them (lets the Procrustes path
    compute them in k dimensions without forming T(v) in d_t)."""

    dot: jax.Array        # [n] T(v_s)·v_t
    pred_sq: jax.Array    # [n] |T(v_s)|²
    target_sq: jax.Array  # [n] |v_t|²
    dot_c: jax.Array      # [n] (T(v_s) − μ_t)·(v_t − μ_t)
    pred_c_sq: jax.Array  # [n] |T(v_s) − μ_t|²
    target_c_sq: jax.Array  # [n] |v_t − μ_t|²


class Cosines(NamedTuple):
    raw: jax.Array       # [n]
    centered: jax.Array  # [n]


def row_stats(pred: jax.Array, target: jax.Array, mu_t: jax.Array) -> RowStats:
    """pred, target: [n, d_t], mu_t: [d_t]."""
    pc, tc = pred - mu_t, target - mu_t
    return RowStats(jnp.sum(pred * target, -1), jnp.sum(pred * pred, -1), jnp.sum(target * target, -1),
                    jnp.sum(pc * tc, -1), jnp.sum(pc * pc, -1), jnp.sum(tc * tc, -1))


def cosines(stats: RowStats) -> Cosines:
    return Cosines(safe_div(stats.dot, jnp.sqrt(stats.pred_sq * stats.target_sq)),
                   safe_div(stats.dot_c, jnp.sqrt(stats.pred_c_sq * stats.target_c_sq)))


def row_cosines(pred: jax.Array, target: jax.Array, mu_t: jax.Array) -> Cosines:
    """[n] raw and centered cosines of pred [n, d_t] with target [n, d_t]."""
    return cosines(row_stats(pred, target, mu_t))


def masked_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    """Mean of x [n] over rows with weight 1 (NaN when there are none)."""
    count = jnp.sum(w)
    return jnp.where(count > 0, jnp.sum(x * w) / jnp.maximum(count, 1.0), jnp.nan)


def summarize(cos: Cosines, w_train: jax.Array, w_test: jax.Array, onehot: jax.Array) -> dict[str, jax.Array]:
    """Train/test means and per-trait test means ([C], NaN for a trait with no test rows)."""
    counts = onehot.T @ w_test

    def per_trait(x):
        return jnp.where(counts > 0, (onehot.T @ (x * w_test)) / jnp.maximum(counts, 1.0), jnp.nan)

    return {
        "test": masked_mean(cos.raw, w_test),
        "train": masked_mean(cos.raw, w_train),
        "test_centered": masked_mean(cos.centered, w_test),
        "train_centered": masked_mean(cos.centered, w_train),
        "per_trait_test": per_trait(cos.raw),
        "per_trait_test_centered": per_trait(cos.centered),
    }
