"""Alignment: maps between two models' steering-vector spaces, and the protocol that scores them.

    from stf_jax.align import fit_pca, fit_procrustes_map, EvalConfig, evaluate
    pca_s, pca_t = fit_pca(x_s, w, k=64), fit_pca(x_t, w, k=64)
    T = fit_procrustes_map(pca_s, pca_t, x_s, x_t, w)      # T(v) = μ_t + s (v − μ_s) W_s R W_tᵀ
    results = evaluate(["runs/x"], EvalConfig(), layer=-6)  # what `python -m stf_jax.align` runs

Modules: pca (PCA), procrustes (similarity Procrustes), affine (least squares / ridge), adapters (optax),
baselines (identity, mean_target, trait_mean), metrics (raw and centered cosine), protocol (batched jitted trial computations), evaluate (the
protocol over models and layers), report (results.json / results.md), carry_traits (trait vectors carried
by each map, for steering). Run directories are read by `stf_jax.extract.rundir` (find_models, pair_table,
trials), re-exported here.
"""

from .adapters import Adapter, AdapterConfig, load_adapter, save_adapter, train_adapter
from .affine import AffineMap, apply_direction, fit_affine, paired_token_states
from .evaluate import ALL_METHODS, METHODS, EvalConfig, evaluate
from ..extract.rundir import AlignInputError, Trials, find_models, make_trials, pair_table
from .pca import PCA, fit_pca, k_for_variance, project, reconstruct
from .procrustes import Procrustes, ProcrustesMap, apply_procrustes_map, fit_procrustes, fit_procrustes_map
from .report import markdown, write_results

__all__ = [
    "ALL_METHODS", "METHODS", "PCA", "Adapter", "AdapterConfig", "AffineMap", "AlignInputError", "EvalConfig",
    "Procrustes", "ProcrustesMap", "Trials", "apply_direction", "evaluate", "find_models", "fit_affine", "fit_pca",
    "fit_procrustes", "fit_procrustes_map", "k_for_variance", "load_adapter", "make_trials", "markdown",
    "paired_token_states", "pair_table", "project", "reconstruct", "save_adapter", "train_adapter", "apply_procrustes_map",
    "write_results",
]
