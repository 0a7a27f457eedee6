"""Coverage: how much of a vector lies where its map was fitted, so a map can say when it cannot carry it.

A ridge map solves (G + λI) A = C with G the source-side scatter of its training rows. Along an axis e_i
of G with variance g_i the map keeps the fraction g_i / (g_i + λ) of what the data says (its *ridge
leverage*); along an axis the data never moved (g_i ≪ λ) it answers with the ridge's shrinkage, i.e.
nothing learned. The coverage of a unit direction u is the leverage-weighted share of its energy:

    coverage(u) = Σ_i (u·e_i)² g_i / (g_i + λ)          in [0, 1]

1 when u lies in well-sampled directions, near 0 when it is orthogonal to everything the map saw. λ is
the map's own relative ridge (λ = ridge · mean g_i; for maps without a ridge the affine default 0.1).
A map file stores B = diag(sqrt(g/(g+λ))) Eᵀ for the axes with leverage above `KEEP` (coverage = |B u|²,
so the dropped axes can lower it by at most KEEP): tensor `coverage/basis` [k, d_s].

Below `THRESHOLD` `transfer apply` warns, naming the layer, and `--strict` refuses. The threshold and
the score's rank correlation with carried-vs-native quality are measured in `evaluate_kinds` (README).
"""

from __future__ import annotations

import numpy as np

KEEP = 0.02
THRESHOLD = 0.5
DEFAULT_RIDGE = 0.1


def coverage_basis(gram: np.ndarray, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """B [k, d_s] from the source scatter G [d_s, d_s] of a map's training rows (module docstring)."""
    gram = np.asarray(gram, np.float64)
    g, e = np.linalg.eigh((gram + gram.T) / 2)
    g = np.clip(g, 0.0, None)
    lam = max(ridge if ridge > 0 else DEFAULT_RIDGE, 1e-6) * max(g.mean(), 1e-30)
    lev = g / (g + lam)
    keep = lev > KEEP
    return (np.sqrt(lev[keep])[:, None] * e[:, keep].T).astype(np.float32)


def scatter(x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Centered, weight-normalised scatter [d, d] of rows x [n, d] (w: row weights, default 1)."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    mu = (w[:, None] * x).sum(0) / w.sum()
    xc = (x - mu) * np.sqrt(w)[:, None]
    return xc.T @ xc / w.sum()


def coverage(basis: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Coverage of directions u [..., d_s] (normalised here) under one map's basis [k, d_s]."""
    u = np.asarray(u, np.float64)
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    return np.sum((u @ np.asarray(basis, np.float64).T) ** 2, axis=-1)
