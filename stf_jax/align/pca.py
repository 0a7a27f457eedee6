"""PCA of one model's steering vectors: global mean-centering, top-k components, no whitening.

The seed paper reduces each model's vectors to k dimensions before Procrustes, fitted on training
vectors only and *not* whitened, so the relative scale of the components survives and the Procrustes
scale `s` stays meaningful. The principal axes are the right singular vectors of the centered data;
they are computed from the eigendecomposition of the smaller Gram matrix (`[d, d]` when n ≥ d, else
`[n, n]`) with full-f32 matmuls, which is the same SVD at a fraction of the cost when n ≫ d.
`solver="svd"` runs the thin SVD of the centered data instead (slower, for cross-checks).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .ops import mm, safe_div, symmetric_gram, weighted_mean


class PCA(NamedTuple):
    """A fitted PCA (a pytree: stacks under vmap).

    Attributes:
      mean: [d] training mean (the global centre: all traits together).
      components: [d, k] orthonormal principal axes as columns, variance descending.
      variance: [k] variance along each axis (ddof=1, like scikit-learn's `explained_variance_`).
      total_variance: [] total variance of the training vectors (trace of the covariance).
    """

    mean: jax.Array
    components: jax.Array
    variance: jax.Array
    total_variance: jax.Array

    @property
    def k(self) -> int:
        return self.components.shape[-1]

    def explained_ratio(self) -> jax.Array:
        """[k] fraction of the total variance along each axis."""
        return self.variance / self.total_variance


def _centered(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = weighted_mean(x, w)
    return (x - mean) * w[:, None], mean  # rows outside the fit set become 0 and drop out


def _fix_signs(components: jax.Array) -> jax.Array:
    """Make each axis's largest-magnitude coordinate positive, so fits are reproducible."""
    idx = jnp.argmax(jnp.abs(components), axis=0)
    signs = jnp.sign(components[idx, jnp.arange(components.shape[1])])
    return components * jnp.where(signs == 0, 1.0, signs)


@partial(jax.jit, static_argnames=("k", "solver"))
def fit_pca(x: jax.Array, w: jax.Array, k: int, solver: str = "gram") -> PCA:
    """Fit on the rows of x [n, d] with weight 1 in w [n]; keep k axes."""
    n, d = x.shape
    if not 0 < k <= min(n, d):
        raise ValueError(f"k={k} must lie in 1..min(n={n}, d={d})")
    xc, mean = _centered(x, w)
    dof = jnp.sum(w) - 1.0
    if solver == "gram" and n >= d:  # covariance route: eigenvectors of xcᵀxc are the axes
        return _from_scatter(symmetric_gram(xc), mean, dof, k)
    if solver == "svd":
        _, sv, vt = jnp.linalg.svd(xc, full_matrices=False)
        components, eig = vt[:k].T, sv[:k] ** 2
    elif solver == "gram":  # Gram route: axes = xcᵀ u / σ for eigenvectors u of xc xcᵀ
        evals, evecs = jnp.linalg.eigh(symmetric_gram(xc.T))
        eig, u = evals[::-1][:k], evecs[:, ::-1][:, :k]
        components = safe_div(mm(xc.T, u), jnp.sqrt(jnp.maximum(eig, 0.0))[None, :])
    else:
        raise ValueError(f"solver must be 'gram' or 'svd', got {solver!r}")
    eig = jnp.maximum(eig, 0.0)
    return PCA(mean, _fix_signs(components), eig / dof, jnp.sum(xc * xc) / dof)


def _from_scatter(scatter: jax.Array, mean: jax.Array, dof: jax.Array, k: int) -> PCA:
    """scatter: [d, d] Σ (x − μ)(x − μ)ᵀ over the fit rows -> its top-k axes."""
    evals, evecs = jnp.linalg.eigh(scatter)
    eig, components = jnp.maximum(evals[::-1][:k], 0.0), evecs[:, ::-1][:, :k]
    return PCA(mean, _fix_signs(components), eig / dof, jnp.trace(scatter) / dof)


@partial(jax.jit, static_argnames=("k",))
def fit_pca_from_moments(scatter: jax.Array, total: jax.Array, m: jax.Array, shift: jax.Array, k: int) -> PCA:
    """The PCA of m rows given their moments about a fixed point c (`shift` [d]): scatter = Σ (x − c)(x − c)ᵀ
    [d, d], total = Σ (x − c) [d].

    Moments add and subtract, so a trial's training fit can be the moments of all rows minus those of its
    held-out rows (`protocol.fit_pcas_by_complement`): one pass over the data serves every trial. With
    δ = total / m = μ − c, the centred scatter is scatter − m δδᵀ; c near μ keeps that subtraction exact
    in f32."""
    delta = total / m
    return _from_scatter(scatter - m * jnp.outer(delta, delta), shift + delta, m - 1.0, k)


@jax.jit
def spectrum(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """All variances, descending ([min(n, d)]), and the total: what choosing k by variance needs."""
    n, d = x.shape
    xc, _ = _centered(x, w)
    gram = symmetric_gram(xc) if n >= d else symmetric_gram(xc.T)
    dof = jnp.sum(w) - 1.0
    return jnp.maximum(jnp.linalg.eigvalsh(gram)[::-1], 0.0) / dof, jnp.sum(xc * xc) / dof


def k_for_variance(variance: np.ndarray, total: float, fraction: float) -> int:
    """Smallest k whose top-k axes explain at least `fraction` of the total variance."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"variance fraction must lie in (0, 1], got {fraction}")
    cum = np.cumsum(np.asarray(variance, np.float64)) / float(total)
    return int(min(np.searchsorted(cum, fraction - 1e-12) + 1, len(cum)))


def k_for_pair(x_s: np.ndarray, x_t: np.ndarray, w: np.ndarray, k: int | None, variance: float) -> int:
    """k given, else the protocol's rule (the smallest k explaining `variance` of both models' weighted rows,
    the larger of the two); capped by the rows and the widths. Every map that is scored, saved or steered
    resolves its PCA size here."""
    n = int(np.asarray(w).sum())
    if k is None:
        ks = []
        for x in (x_s, x_t):
            var, total = spectrum(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
            ks.append(k_for_variance(np.asarray(var), float(total), variance))
        k = max(ks)
    return int(max(1, min(k, n - 1, x_s.shape[1], x_t.shape[1])))


def project(pca: PCA, x: jax.Array) -> jax.Array:
    """x: [..., d] -> coordinates [..., k] (centered, not whitened)."""
    return mm(x - pca.mean, pca.components)


def reconstruct(pca: PCA, z: jax.Array) -> jax.Array:
    """z: [..., k] -> [..., d] in the model's space (mean added back)."""
    return pca.mean + mm(z, pca.components.T)


def truncate(pca: PCA, k: int) -> PCA:
    """The same fit keeping only the first k axes (works on stacked fits too)."""
    return pca._replace(components=pca.components[..., :k], variance=pca.variance[..., :k])
