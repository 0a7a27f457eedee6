"""Coverage: how much of a vector lies where its map was fitted, so a map can say when it cannot carry it.

A ridge map solves (G + λI) A = C with G the source-side scatter of its training rows. Along an axis e_i
of G with variance g_i the map keeps the fraction g_i / (g_i + λ) of what the data says (its *ridge
leverage*); along an axis the data never moved (g_i ≪ λ) it answers with the ridge's shrinkage, i.e.
nothing learned. The coverage of a unit direction u is the leverage-weighted share of its energy:

    coverage(u) = Σ_i (u·e_i)² g_i / (g_i + λ)          in [0, 1]

1 when u lies in well-sampled directions, near 0 when it is orthogonal to everything the map saw. λ is
the map's own relative ridge (λ = ridge · mean g_i; for maps without a ridge the affine default 0.1).
A map file stores B = diag(sqrt(g/(g+λ))) Eᵀ for the axes with leverage above `KEEP` (coverage = |B u|²,
so the dropped axes can lower it by at most KEEP): tensor `coverage/basis` [k, d_s]. Compact files (the
shipped map sets) keep only the `max_axes` axes of highest leverage and `coverage/rest` [1], the mean
leverage of the dropped axes, applied to the energy of u outside the kept ones (the error is at most the
spread of the dropped leverages times that energy).

Below `THRESHOLD` `transfer apply` warns, naming the layer, and `--strict` refuses. The threshold and
the score's rank correlation with carried-vs-native quality are measured in `evaluate_kinds` (README).
"""

from __future__ import annotations

import numpy as np

KEEP = 0.02
THRESHOLD = 0.5
DEFAULT_RIDGE = 0.1


def coverage_basis(gram: np.ndarray, ridge: float = DEFAULT_RIDGE, max_axes: int | None = None
                   ) -> tuple[np.ndarray, float]:
    """(B [k, d_s], rest) from the source scatter G [d_s, d_s] of a map's training rows (module docstring)."""
    gram = np.asarray(gram, np.float64)
    g, e = np.linalg.eigh((gram + gram.T) / 2)
    g, e = np.clip(g[::-1], 0.0, None), e[:, ::-1]
    lam = max(ridge if ridge > 0 else DEFAULT_RIDGE, 1e-6) * max(g.mean(), 1e-30)
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
