"""Coverage: how much of a vector lies where its map was fitted, so a map can say when it cannot carry it.

A map is fitted on rows that vary along some source directions much more than along others. Along an
axis e_i of their scatter G with variance g_i, the data pins the map down in proportion to the axis'
*leverage* g_i / (g_i + λ); along an axis the data hardly moved (g_i ≪ λ) the map's answer is the
ridge's shrinkage, not something learned. The coverage of a unit direction u is the leverage-weighted
share of its energy:

    coverage(u) = Σ_i (u·e_i)² g_i / (g_i + λ) = uᵀ G (G + λI)⁻¹ u          in [0, 1]

with λ = the mean g_i: an axis with the variance of an average axis counts half. (λ is the score's own,
not the map's ridge: at the map's ridge, 0.1 × mean g, nearly every axis of real data has leverage near 1
and the score does not separate vectors the map carries from ones it does not. Measured on the shipped
models, README: with λ = mean g, trait vectors carried at cosine < 0.3 have median coverage 0.31
(smollm2 → gemma3) and 0.74 (gemma3 → smollm2), those carried at ≥ 0.5 median 0.84 in both.)

A map file stores B = diag(sqrt(g/(g+λ))) Eᵀ for the axes with leverage above `KEEP` (coverage = |B u|²,
so the dropped axes can lower it by at most KEEP): tensor `coverage/basis` [k, d_s]. Compact files (the
shipped map sets) keep only the `max_axes` axes of highest leverage and `coverage/rest` [1], the mean
leverage of the dropped axes, applied to the energy of u outside the kept ones (the error is at most the
spread of the dropped leverages times that energy).

Below `THRESHOLD` `transfer apply` warns, naming the layer, and `--strict` refuses. The threshold and
the score's rank correlation with carried-vs-native quality are measured by `transfer kinds` (README).
"""

from __future__ import annotations

import numpy as np

from ..core.vector import COVERAGE_THRESHOLD as THRESHOLD  # noqa: F401 one threshold for the score and SteeringVector

KEEP = 0.02


def coverage_lambda(gram: np.ndarray) -> float:
    """λ of the score: the mean variance per axis of the map's training rows."""
    return max(float(np.trace(gram)) / len(gram), 1e-30)


def coverage_basis(gram: np.ndarray, max_axes: int | None = None) -> tuple[np.ndarray, float]:
    """(B [k, d_s], rest) from the source scatter G [d_s, d_s] of a map's training rows (module docstring)."""
    gram = np.asarray(gram, np.float64)
    g, e = np.linalg.eigh((gram + gram.T) / 2)
    g, e = np.clip(g[::-1], 0.0, None), e[:, ::-1]
    lam = coverage_lambda(gram)
    lev = g / (g + lam)
    keep = lev > KEEP
    rest = 0.0
    if max_axes is not None and keep.sum() > max_axes:
        rest = float(lev[max_axes:].mean())
        keep = np.arange(len(lev)) < max_axes
    return (np.sqrt(lev[keep])[:, None] * e[:, keep].T).astype(np.float32), rest


def scatter(x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Centered, weight-normalised scatter [d, d] of rows x [n, d] (w: row weights, default 1)."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    mu = (w[:, None] * x).sum(0) / w.sum()
    xc = (x - mu) * np.sqrt(w)[:, None]
    return xc.T @ xc / w.sum()


def coverage_exact(gram: np.ndarray, u: np.ndarray) -> np.ndarray:
    """uᵀ G (G + λI)⁻¹ u for directions u [m, d_s] (normalised here), straight from the scatter: what
    `coverage` gives from a basis with every axis kept (one solve, no eigendecomposition)."""
    u = np.atleast_2d(np.asarray(u, np.float64))
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    if not len(u):
        return np.zeros(0)
    z = np.linalg.solve(gram + coverage_lambda(gram) * np.eye(len(gram)), u.T)  # [d_s, m]
    return np.sum(u.T * (gram @ z), axis=0)


def coverage(basis: np.ndarray, u: np.ndarray, rest: float = 0.0) -> np.ndarray:
    """Coverage of directions u [..., d_s] (normalised here) under one map's basis [k, d_s] (and the
    mean leverage `rest` of the axes a compact basis dropped)."""
    u = np.asarray(u, np.float64)
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    basis = np.asarray(basis, np.float64)
    proj = u @ basis.T
    out = np.sum(proj ** 2, axis=-1)
    if rest:
        inside = np.sum((proj / np.maximum(np.linalg.norm(basis, axis=-1), 1e-30)) ** 2, axis=-1)
        out = out + rest * np.clip(1.0 - inside, 0.0, 1.0)
    return np.clip(out, 0.0, 1.0)
