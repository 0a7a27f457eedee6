"""Similarity Procrustes between two models' PCA spaces (the seed paper's method).

    min_{R, s} ‖Z_t − s·Z_s·R‖_F   with RᵀR = I          (Z_s, Z_t: [n, k] centered PCA coordinates)
    Z_sᵀ Z_t = U Σ Vᵀ  →  R = U Vᵀ,  s = tr Σ / ‖Z_s‖²_F

Each model gets its own PCA (the seed's Eq. 6; its Algorithm 1 projects the target with the source's
axes, which needs equal widths), both with the same k. The transfer is

    T(v) = μ_t + s·(v − μ_s) W_s R W_tᵀ                   (W: [d, k] PCA axes, row vectors)

`rotation_only` restricts R to det(R) = +1 by flipping the singular vector of the smallest singular value
when U Vᵀ is a reflection (the Kabsch correction); s then uses the corrected trace.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .ops import mm, weighted_gram
from .pca import PCA, project, reconstruct


class Procrustes(NamedTuple):
    """R: [k, k] orthogonal, s: [] scale; maps source PCA coordinates to target ones (z_s ↦ s·z_s R)."""

    rotation: jax.Array
    scale: jax.Array


class ProcrustesMap(NamedTuple):
    """The full transfer operator T: R^{d_s} → R^{d_t} (PCA of each model + Procrustes)."""

    source: PCA
    target: PCA
    procrustes: Procrustes

    def __call__(self, v: jax.Array) -> jax.Array:
        """v: [..., d_s] -> T(v): [..., d_t]."""
        return apply_procrustes_map(self, v)


@partial(jax.jit, static_argnames=("rotation_only",))
def fit_procrustes(z_s: jax.Array, z_t: jax.Array, w: jax.Array, rotation_only: bool = False) -> Procrustes:
    """z_s, z_t: [n, k] paired coordinates (centered on the fit rows), w: [n] 0/1 fit rows."""
    u, sv, vt = jnp.linalg.svd(weighted_gram(z_s, z_t, w))
    if rotation_only:
        sign = jnp.sign(jnp.linalg.det(u) * jnp.linalg.det(vt))
        sign = jnp.where(sign == 0, 1.0, sign)
        flip = jnp.ones_like(sv).at[-1].set(sign)
        u, sv = u * flip[None, :], sv * flip
    rotation = mm(u, vt)
    norm_s = jnp.sum(w[:, None] * z_s * z_s)
    return Procrustes(rotation, jnp.sum(sv) / norm_s)


def fit_procrustes_map(source: PCA, target: PCA, x_s: jax.Array, x_t: jax.Array, w: jax.Array,
                       rotation_only: bool = False) -> ProcrustesMap:
    """Fit R, s on paired vectors x_s [n, d_s], x_t [n, d_t] with the given PCAs (fitted on the same rows)."""
    fit = fit_procrustes(project(source, x_s), project(target, x_t), w, rotation_only=rotation_only)
    return ProcrustesMap(source, target, fit)


@jax.jit
def apply_procrustes_map(m: ProcrustesMap, v: jax.Array) -> jax.Array:
    """T(v) = μ_t + s·(v − μ_s) W_s R W_tᵀ for v: [..., d_s]."""
    z = project(m.source, v)
    return reconstruct(m.target, m.procrustes.scale * mm(z, m.procrustes.rotation))
