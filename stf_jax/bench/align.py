"""Alignment at the seed paper's scale (scripts/bench_align.py, the accelerator check's alignment section):
synthetic vectors with planted shared structure, trait-stratified splits, the NumPy/SciPy/scikit-learn
pipeline a user would write (`run_reference`) and stf_jax's batched pipeline (`run_stf`).

Synthetic vectors (stf_jax.align.synthetic: a shared latent of rank ~1.6 k with a 1/j spectrum and a trait
level, rotated and scaled into each model, plus noise, rows unit-normalized), 26 traits with the paper's
Table 1 counts. Both pipelines compute the test and train cosine (raw), the centered test cosine and s for
every (directed pair, trial).
"""

from __future__ import annotations

import gc
import os
import resource
import time

import numpy as np

TABLE1 = {  # the seed paper's Table 1: pairs per trait (total 65,329)
    "accessibility": 5000, "assertiveness": 3000, "authority": 3000, "certainty": 104, "clarity": 5000,
    "concreteness": 106, "creativity": 100, "directness": 3000, "emotional_tone": 5000, "empathy": 100,
    "enthusiasm": 5000, "formality": 4577, "hedging": 179, "humor": 100, "inclusivity": 3000, "objectivity": 4000,
    "optimism": 5000, "persuasiveness": 230, "politeness": 100, "precision": 106, "professionalism": 5000,
    "register": 4000, "specificity": 4000, "technical_complexity": 106, "urgency": 521, "verbosity": 5000,
}


NOISE = 3.0  # isotropic noise norm per vector (the shared signal has norm ~3.7): test cosines near the paper's 0.5


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_data(scale: float, seed: int):
    """Three models' vectors (widths 3072/4096/4096 x scale) for Table 1's counts x scale -> (xs, traits)."""
    from stf_jax.align.synthetic import planted_vectors

    counts = {t: max(5, round(c * scale)) for t, c in TABLE1.items()}
    traits = np.repeat(np.arange(len(counts)), list(counts.values()))
    dims = [round(3072 * scale), round(4096 * scale), round(4096 * scale)]
    rank = round(2048 * scale)
    xs = planted_vectors(traits, dims, rank, trait_strength=0.8, noise=NOISE, decay=1.0,
                         scales=[1.0, 1.3, 0.8], normalize=True, seed=seed)
    return xs, traits


def stratified_split(traits: np.ndarray, seed: int, test_fraction: float = 0.2):
    """One trait-stratified split -> (train, test) boolean masks."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(traits), bool)
    for t in np.unique(traits):
        rows = np.nonzero(traits == t)[0]
        test[rng.choice(rows, round(test_fraction * len(rows)), replace=False)] = True
    return ~test, test


def stratified_kfold(traits: np.ndarray, folds: int, seed: int):
    """K trait-stratified folds; trial t tests fold t (an 80/20 split per trial when K = 5)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(traits), int)
    for t in np.unique(traits):
        rows = np.nonzero(traits == t)[0]
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return [(fold != f, fold == f) for f in range(folds)]


def row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def stf_matmul_flops(n: int, dims: list[int], k: int, w_train: np.ndarray, n_pairs: int, width: int = 512) -> float:
    """Matmul FLOPs run_stf executes (LAPACK eigh/SVD not counted): the scatters (upper 512-wide blocks of
    all rows, unless the held-out sets partition them, plus each trial's held-out rows), the projections
    of every row per trial, and per model pair and trial the fit Gram and the bilinear form over all rows."""
    from stf_jax.align.protocol import held_out_rows

    passes = (1 - w_train).sum() + (0 if held_out_rows(w_train)[1] else n)
    total = 0.0
    for d in dims:
        blocks = [min(width, d - a) for a in range(0, d, width)]
        upper = sum(blocks[i] * blocks[j] for i in range(len(blocks)) for j in range(i, len(blocks)))
        total += 2 * passes * upper + len(w_train) * 2 * n * d * k
    return total + n_pairs * len(w_train) * 2 * (2 * n * k * k)


def run_reference(xs, splits, pairs, k, solver, cached: bool = False):
    """The NumPy/SciPy/scikit-learn pipeline. cached=False refits both PCAs for every directed pair, as the
    paper's Algorithm 1 is written; cached=True fits one PCA per model per trial and reuses it (the
    strongest honest version of the same pipeline: the PCAs do not depend on the pair).

    Returns (metrics {test, test_centered, train, scale: [pairs, trials]}, wall s, CPU s, PCA-fit wall s)."""
    from scipy.linalg import orthogonal_procrustes
    from sklearn.decomposition import PCA

    out = {key: np.zeros((len(pairs), len(splits))) for key in ("test", "test_centered", "train", "scale")}
    t_pca = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for t, (tr, te) in enumerate(splits):
        cache = {}

        def pca(m, rows):
            if cached and m in cache:
                return cache[m]
            fitted = PCA(n_components=k, svd_solver=solver, random_state=0).fit(xs[m][rows])
            if cached:
                cache[m] = fitted
            return fitted

        for p, (a, b) in enumerate(pairs):
            ta = time.perf_counter()
            xs_tr, xt_tr = xs[a][tr], xs[b][tr]
            pca_s, pca_t = pca(a, tr), pca(b, tr)
            t_pca += time.perf_counter() - ta
            zs, zt = pca_s.transform(xs_tr), pca_t.transform(xt_tr)
            rot, sigma_sum = orthogonal_procrustes(zs, zt)
            s = sigma_sum / (zs**2).sum()
            pred_te = pca_t.inverse_transform(s * pca_s.transform(xs[a][te]) @ rot)
            pred_tr = pca_t.inverse_transform(s * zs @ rot)
            mu = pca_t.mean_
            out["test"][p, t] = row_cos(pred_te, xs[b][te]).mean()
            out["test_centered"][p, t] = row_cos(pred_te - mu, xs[b][te] - mu).mean()
            out["train"][p, t] = row_cos(pred_tr, xt_tr).mean()
            out["scale"][p, t] = s
            print(f"  reference trial {t} pair {a}->{b}: test cos {out['test'][p, t]:.4f} "
                  f"({time.perf_counter() - ta:.1f}s, load {os.getloadavg()[0]:.1f})", flush=True)
            del xs_tr, xt_tr, zs, zt, pred_te, pred_tr
            gc.collect()
    return out, time.perf_counter() - t0, time.process_time() - c0, t_pca


def run_stf(xs, splits, pairs, k, batch_size):
    """stf_jax: one PCA per model per trial, all trials from one pass over the data, projections, then every
    model pair x trial in one batched Procrustes call that serves both directions of each pair
    (R_ba = R_abᵀ), scored in k dimensions. Compile time is included.

    Returns (metrics {test, test_centered, train, scale: [pairs, trials]}, wall s, CPU s)."""
    import jax
    import jax.numpy as jnp

    from stf_jax.align.protocol import fit_pcas_by_complement, held_out_rows, procrustes_pairs, project_trials

    t0, c0 = time.perf_counter(), time.process_time()
    w_train = np.stack([tr for tr, _ in splits]).astype(np.float32)
    w_test = np.stack([te for _, te in splits]).astype(np.float32)
    held_out, partition = held_out_rows(w_train)
    projected = []
    for x in xs:  # widths differ: one call per model, all trials inside
        xj = jnp.asarray(x)
        pcas = fit_pcas_by_complement(xj, held_out, k, partition=partition)
        projected.append(jax.block_until_ready(project_trials(pcas, xj, batch_size=1)))
        print(f"  stf_jax PCA+projection d={x.shape[1]} x {len(splits)} trials: {time.perf_counter() - t0:.1f}s",
              flush=True)
        del xj, pcas
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *projected)  # [M, T, ...]
    del projected
    unordered = sorted({tuple(sorted(p)) for p in pairs})
    a_idx, b_idx = (jnp.asarray([p[i] for p in unordered]) for i in (0, 1))
    onehot = jnp.ones((x.shape[0], 1), jnp.float32)
    res, scale = procrustes_pairs(stacked, a_idx, b_idx, jnp.asarray(w_train), jnp.asarray(w_test), onehot,
                                  batch_size=batch_size)  # [P, 2, T]: both directions of each pair
    where = {(a, b): (i, 0) for i, (a, b) in enumerate(unordered)} | {(b, a): (i, 1) for i, (a, b) in enumerate(unordered)}
    pick = [where[p] for p in pairs]
    out = {key: np.stack([np.asarray(res[key])[i, j] for i, j in pick]) for key in ("test", "test_centered", "train")}
    out["scale"] = np.stack([np.asarray(scale)[i, j] for i, j in pick])
    return out, time.perf_counter() - t0, time.process_time() - c0
