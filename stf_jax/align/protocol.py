"""The evaluation protocol as batched array programs: every trial, scrambled pairing and layer pair of a
directed model pair is one problem in a stacked batch, solved by one jitted call.

Shapes: T trials, S pairings (SCRAMBLES: proper, within-trait, cross-trait shuffles of the training
rows), L_s/L_t layers, C traits. Each trial is a pair of 0/1 row masks (train, test) over the same n
rows, so splits of slightly different sizes stack. PCA fits gather each trial's training rows
(`TrainRows`: indices padded to a common length, padding weighted 0), so paper-scale fits do not pay for
the test rows; at the paper's scale (n ≫ d) `fit_pcas_by_complement` gets every trial's fit from one
pass over the data instead. Every `batch_size` argument bounds how many problems one vmapped chunk holds
(`ops.map_batched`); None runs them all in one vmap.

Procrustes is evaluated in k dimensions: with y = s·z_s R the predicted target coordinates,
T(v)·v_t = μ_t·v_t + y·(v_t W_t) and |T(v)|² = |μ_t|² + 2 y·(μ_t W_t) + |y|² (W_t has orthonormal
columns), so no [n, d_t] reconstruction is formed.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import baselines, maps
from .metrics import RowStats, cosines, masked_mean, row_cosines, summarize
from .ops import map_batched, mm, symmetric_gram, weighted_mean
from .pca import PCA, fit_pca, fit_pca_from_moments, spectrum
from .procrustes import fit_procrustes


class TrainRows(NamedTuple):
    """Per trial, the training row indices padded to one length: index [T, m], weight [T, m] (0 = pad)."""

    index: jax.Array
    weight: jax.Array


def train_rows(w_train: np.ndarray) -> TrainRows:
    """From 0/1 masks [T, n]."""
    w_train = np.asarray(w_train)
    m = int(w_train.sum(1).max())
    index = np.zeros((w_train.shape[0], m), np.int32)
    weight = np.zeros((w_train.shape[0], m), np.float32)
    for t, row in enumerate(w_train):
        rows = np.nonzero(row)[0]
        index[t, : len(rows)] = rows
        weight[t, : len(rows)] = 1.0
    return TrainRows(jnp.asarray(index), jnp.asarray(weight))


def held_out_rows(w_train: np.ndarray) -> tuple[TrainRows, bool]:
    """The rows outside each trial's training set (0/1 masks [T, n]), and whether they partition the rows
    (K-fold splits: every row held out exactly once), for `fit_pcas_by_complement`."""
    out = 1.0 - np.asarray(w_train, np.float32)
    return train_rows(out), bool(np.all(out.sum(0) == 1.0))


@partial(jax.jit, static_argnames=("k", "partition", "batch_size"))
def fit_pcas_by_complement(x: jax.Array, held_out: TrainRows, k: int, partition: bool = False,
                           batch_size: int | None = 1) -> PCA:
    """The same PCAs as `fit_pcas` (covariance route, n ≥ d), from one pass over the data.

    A trial's training scatter is the scatter of all rows minus that of its held-out rows, so T trials of
    80/20 splits cost 1 + 0.2·T passes over x [n, d] instead of 0.8·T, and one pass when the held-out sets
    partition the rows (`partition`: their scatters sum to the total). held_out: `held_out_rows(w_train)`."""
    if not 0 < k <= x.shape[1]:
        raise ValueError(f"k={k} must lie in 1..d={x.shape[1]}")
    shift = jnp.mean(x, 0)
    xs = x - shift  # moments about the overall mean: the per-trial correction m·δδᵀ stays small

    def moments(r):
        xo = xs[r[0]] * r[1][:, None]
        return symmetric_gram(xo), jnp.sum(xo, 0), jnp.sum(r[1])

    s_out, t_out, m_out = map_batched(moments, tuple(held_out), batch_size)  # [T, d, d], [T, d], [T]
    s_all = jnp.sum(s_out, 0) if partition else symmetric_gram(xs)
    t_all, n = jnp.sum(xs, 0), x.shape[0]
    return map_batched(lambda a: fit_pca_from_moments(s_all - a[0], t_all - a[1], n - a[2], shift, k),
                       (s_out, t_out, m_out), batch_size)


@partial(jax.jit, static_argnames=("k", "solver", "batch_size"))
def fit_pcas(x: jax.Array, rows: TrainRows, k: int, solver: str = "gram", batch_size: int | None = None,
             valid: jax.Array | None = None) -> PCA:
    """x: [n, d] -> one PCA per trial (leading axis T); rows with valid = 0 ([n], optional) are left out."""
    def one(r):
        w = r[1] if valid is None else r[1] * valid[r[0]]
        return fit_pca(x[r[0]], w, k, solver)

    return map_batched(one, tuple(rows), batch_size)


@partial(jax.jit, static_argnames=("batch_size",))
def spectra(x: jax.Array, rows: TrainRows, batch_size: int | None = None,
            valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Variances [T, min(m, d)] (descending) and totals [T]: for choosing k by explained variance."""
    def one(r):
        w = r[1] if valid is None else r[1] * valid[r[0]]
        return spectrum(x[r[0]], w)

    return map_batched(one, tuple(rows), batch_size)


class Projected(NamedTuple):
    """One model's rows seen from its PCA (per trial): what the k-space evaluation needs.

    z [n, k] = (x − μ) W; x_dot_mu [n] = x·μ; x_sq [n] = |x|²; mu_proj [k] = μ W; mu_sq [] = |μ|².
    """

    z: jax.Array
    x_dot_mu: jax.Array
    x_sq: jax.Array
    mu_proj: jax.Array
    mu_sq: jax.Array


def project_rows(pca: PCA, x: jax.Array) -> Projected:
    mu, w = pca.mean, pca.components
    return Projected(mm(x - mu, w), x @ mu, jnp.sum(x * x, -1), mm(mu, w), jnp.sum(mu * mu))


@partial(jax.jit, static_argnames=("batch_size",))
def project_trials(pcas: PCA, x: jax.Array, batch_size: int | None = None) -> Projected:
    """Stacked PCAs [T, …] applied to x [n, d] -> Projected with leading axis T."""
    return map_batched(lambda p: project_rows(p, x), pcas, batch_size)


def kspace_stats(tgt: Projected, y_dot_z: jax.Array, y_mu: jax.Array, y_sq: jax.Array) -> RowStats:
    """Per-row stats of a prediction y [n, k] in the target's PCA coordinates, from y·z_t, y·(μ_t W_t) and
    |y|² (the module docstring's identities): the one place the k-space cosines are assembled."""
    return RowStats(dot=tgt.x_dot_mu + y_dot_z + y_mu, pred_sq=tgt.mu_sq + 2.0 * y_mu + y_sq, target_sq=tgt.x_sq,
                    dot_c=y_dot_z, pred_c_sq=y_sq, target_c_sq=tgt.x_sq - 2.0 * tgt.x_dot_mu + tgt.mu_sq)


def procrustes_stats(z_s: jax.Array, tgt: Projected, w_fit: jax.Array, perm: jax.Array | None,
                     rotation_only: bool) -> tuple[RowStats, jax.Array]:
    """Fit on rows (perm[i] of the source ↔ i of the target) with w_fit = 1; score every row's true pair.

    Returns the per-row stats and the scale s."""
    fit = fit_procrustes(z_s if perm is None else z_s[perm], tgt.z, w_fit, rotation_only=rotation_only)
    y = fit.scale * mm(z_s, fit.rotation)  # predicted target coordinates [n, k]
    return kspace_stats(tgt, jnp.sum(y * tgt.z, -1), y @ tgt.mu_proj, jnp.sum(y * y, -1)), fit.scale


@partial(jax.jit, static_argnames=("rotation_only", "batch_size"))
def procrustes_trials(src: Projected, tgt: Projected, w_train: jax.Array, w_test: jax.Array, perms: jax.Array,
                      onehot: jax.Array, rotation_only: bool = False, batch_size: int | None = None):
    """src, tgt: Projected [T, …]; perms [T, S, n] -> (metrics with leading [T, S], scale [T, S])."""

    def trial(args):
        s, t, wtr, wte, pm = args

        def pairing(p):
            stats, scale = procrustes_stats(s.z, t, wtr, p, rotation_only)
            return summarize(cosines(stats), wtr, wte, onehot), scale

        return jax.vmap(pairing)(pm)

    return map_batched(trial, (src, tgt, w_train, w_test, perms), batch_size)


def procrustes_stats_both_ways(a: Projected, b: Projected, w_fit: jax.Array, rotation_only: bool
                               ) -> tuple[tuple[RowStats, jax.Array], tuple[RowStats, jax.Array]]:
    """Both directions of one model pair from one fit: ((stats, s) for a → b, (stats, s) for b → a).

    z_bᵀ z_a is the transpose of z_aᵀ z_b, so b → a has R_ba = R_abᵀ (the Kabsch sign too) and
    s_ba = tr Σ / ‖z_b‖² = s_ab ‖z_a‖² / ‖z_b‖². Each row's bilinear form (z_a R)·z_b serves both
    directions and R is orthogonal (|z R| = |z|), so the pair costs one Gram, one SVD and one [n, k]·[k, k]
    product instead of two of each."""
    fit = fit_procrustes(a.z, b.z, w_fit, rotation_only=rotation_only)
    bilinear = jnp.sum(mm(a.z, fit.rotation) * b.z, -1)  # [n] (z_a R)·z_b = (z_b Rᵀ)·z_a
    sq_a, sq_b = jnp.sum(a.z * a.z, -1), jnp.sum(b.z * b.z, -1)
    scale_ba = fit.scale * jnp.sum(w_fit * sq_a) / jnp.sum(w_fit * sq_b)

    def stats(scale, z_src, sq_src, r_mu, tgt):  # y = scale · z_src R (or Rᵀ); r_mu: y·μ_t = scale · z_src·r_mu
        return kspace_stats(tgt, scale * bilinear, scale * (z_src @ r_mu), scale**2 * sq_src)

    return ((stats(fit.scale, a.z, sq_a, mm(fit.rotation, b.mu_proj), b), fit.scale),
            (stats(scale_ba, b.z, sq_b, mm(a.mu_proj, fit.rotation), a), scale_ba))


@partial(jax.jit, static_argnames=("rotation_only", "batch_size"))
def procrustes_pairs(proj: Projected, a_idx: jax.Array, b_idx: jax.Array, w_train: jax.Array, w_test: jax.Array,
                     onehot: jax.Array, rotation_only: bool = False, batch_size: int | None = 1):
    """Every model pair × trial (proper pairing), both directions, in one call, after PCA to a common k.

    proj: Projected stacked over models and trials [M, T, …]; a_idx, b_idx: [P] model indices of P
    unordered pairs. Returns (metrics with leading [P, 2, T], scale [P, 2, T]); direction 0 is a → b, 1 is
    b → a. Problems are indexed, not gathered, so the stacked coordinates are not copied per pair."""
    n_pairs, n_trials = a_idx.shape[0], w_train.shape[0]

    def problem(i):
        p, t = i // n_trials, i % n_trials
        a, b = (jax.tree.map(lambda x: x[idx[p], t], proj) for idx in (a_idx, b_idx))
        both = procrustes_stats_both_ways(a, b, w_train[t], rotation_only)
        out = [(summarize(cosines(st), w_train[t], w_test[t], onehot), scale) for st, scale in both]
        return jax.tree.map(lambda u, v: jnp.stack([u, v]), *out)

    out = map_batched(problem, jnp.arange(n_pairs * n_trials), batch_size)  # leading [P·T, 2]
    return jax.tree.map(lambda a: jnp.swapaxes(a.reshape(n_pairs, n_trials, *a.shape[1:]), 1, 2), out)


@partial(jax.jit, static_argnames=("name", "settings", "batch_size"))
def map_trials(name: str, settings: maps.FitSettings, x_s: jax.Array, x_t: jax.Array, w_train: jax.Array,
               w_val: jax.Array, w_test: jax.Array, perms: jax.Array, onehot: jax.Array, keys: jax.Array,
               batch_size: int | None = None):
    """Any method of the map table, fitted on each trial's (scrambled) training pairs and scored on every row.

    w_train, w_val, w_test [T, n]; perms [T, S, n]; keys [T, 2] -> (metrics, maps, info), each with
    leading [T, S]. The map is the one `maps.fit_map` returns: the same computation users deploy."""
    fit = maps.method(name).fit

    def trial(args):
        wtr, wva, wte, pm, key = args
        mu_t = weighted_mean(x_t, wtr)

        def pairing(p):
            m, info = fit(x_s[p], x_t, wtr, wva, key, settings)
            return summarize(row_cosines(m(x_s), x_t, mu_t), wtr, wte, onehot), m, info

        return jax.vmap(pairing)(pm)

    return map_batched(trial, (w_train, w_val, w_test, perms, keys), batch_size)


@jax.jit
def fitted_map_trials(m, x_s: jax.Array, x_t: jax.Array, w_train: jax.Array, w_test: jax.Array, onehot: jax.Array):
    """A map fitted once outside the trials (on other data: corpus token states) scored per trial ([T]).

    Its outputs are directions of state-scale, so each is normalised before the centered cosine."""
    pred = m(x_s)
    pred = pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)

    def trial(wtr, wte):
        return summarize(row_cosines(pred, x_t, weighted_mean(x_t, wtr)), wtr, wte, onehot)

    return jax.vmap(trial)(w_train, w_test)


@jax.jit
def baseline_trials(x_t: jax.Array, w_train: jax.Array, w_test: jax.Array, onehot: jax.Array):
    """The label baselines mean_target and trait_mean (no map from the source); metrics with leading [T]."""
    n = x_t.shape[0]

    def trial(wtr, wte):
        mu_t = weighted_mean(x_t, wtr)
        preds = {"mean_target": baselines.mean_target(mu_t, n), "trait_mean": baselines.trait_mean(x_t, wtr, onehot, mu_t)}
        return {name: summarize(row_cosines(p, x_t, mu_t), wtr, wte, onehot) for name, p in preds.items()}

    return jax.vmap(trial)(w_train, w_test)


@partial(jax.jit, static_argnames=("rotation_only", "batch_size"))
def layer_sweep(src: Projected, tgt: Projected, w_train: jax.Array, w_test: jax.Array, valid_s: jax.Array,
                valid_t: jax.Array, rotation_only: bool = False, batch_size: int | None = 1) -> dict[str, jax.Array]:
    """Procrustes for every source layer × target layer × trial (proper pairing).

    src: Projected [L_s, T, …], tgt: Projected [L_t, T, …]; valid_s [L_s, n], valid_t [L_t, n]: rows
    usable at each layer (a pair counts where both are valid) -> {test, test_centered, train,
    train_centered, scale}: each [L_s, L_t, T]. Source layers go through map_batched (batch_size
    source layers per chunk); target layers and trials are vmapped."""

    def pair(s_z, t, wtr, wte):
        stats, scale = procrustes_stats(s_z, t, wtr, None, rotation_only)
        c = cosines(stats)
        return {"test": masked_mean(c.raw, wte), "test_centered": masked_mean(c.centered, wte),
                "train": masked_mean(c.raw, wtr), "train_centered": masked_mean(c.centered, wtr), "scale": scale}

    over_trials = jax.vmap(pair, in_axes=(0, 0, 0, 0))

    def per_target(s_z, vs, t, vt):
        both = vs * vt
        return over_trials(s_z, t, w_train * both, w_test * both)

    over_targets = jax.vmap(per_target, in_axes=(None, None, 0, 0))
    return map_batched(lambda a: over_targets(a[0], a[1], tgt, valid_t), (src.z, valid_s), batch_size)
