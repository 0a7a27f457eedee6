"""Baselines that need no learned map: what a transfer result has to beat.

- `identity`: the source vector itself (the Preference-Vector idea's zero-shot injection), zero-padded or truncated to the
  target width when the widths differ.
- `mean_target`: the target's training mean μ_t for every input (scores cos(μ_t, v_t) raw, 0 centered).
- `trait_mean`: the target's training mean of the input's trait. It knows the trait label and nothing
  else; a map that does not beat it has learned nothing about the particular contrast pair.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .ops import mm


def identity(v: jax.Array, d_t: int) -> jax.Array:
    """v: [..., d_s] -> [..., d_t], zero-padded or truncated."""
    d_s = v.shape[-1]
    if d_s >= d_t:
        return v[..., :d_t]
    return jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, d_t - d_s)])


def mean_target(mu_t: jax.Array, n: int) -> jax.Array:
    """[n, d_t] copies of μ_t."""
    return jnp.broadcast_to(mu_t, (n, mu_t.shape[-1]))


def trait_means(x_t: jax.Array, w: jax.Array, onehot: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-trait means of the rows of x_t [n, d_t] with weight 1: ([C, d_t], has_rows [C])."""
    counts = mm(onehot.T, w)
    sums = mm(onehot.T * w[None, :], x_t)
    return sums / jnp.maximum(counts, 1.0)[:, None], counts > 0


def trait_mean(x_t: jax.Array, w: jax.Array, onehot: jax.Array, mu_t: jax.Array) -> jax.Array:
    """[n, d_t]: each row's trait mean over the fit rows (μ_t for a trait with no fit rows)."""
    means, has = trait_means(x_t, w, onehot)
    means = jnp.where(has[:, None], means, mu_t[None, :])
    return mm(onehot, means)
