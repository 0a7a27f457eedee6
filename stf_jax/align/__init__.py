"""Alignment: maps between two models' steering-vector spaces, and the protocol that scores them.

    from stf_jax.align import fit_pca, fit_procrustes_map, EvalConfig, evaluate
    pca_s, pca_t = fit_pca(x_s, w, k=64), fit_pca(x_t, w, k=64)
    T = fit_procrustes_map(pca_s, pca_t, x_s, x_t, w)      # T(v) = μ_t + s (v − μ_s) W_s R W_tᵀ
    results = evaluate(["runs/x"], EvalConfig(), layer=-6)  # what `python -m stf_jax.align` runs

Modules: pca (PCA), procrustes (similarity Procrustes), affine (least squares / ridge), adapters (optax),
baselines (identity, mean_target, trait_mean), metrics (raw and centered cosine), protocol (batched jitted trial computations), evaluate (the
protocol over models and layers), report (results.json / results.md), carry_traits (trait vectors carried
by each map, for steering). Run directories are read by `stf_jax.extract.rundir` (find_models, pair_table,
trials), re-exported here. Names load lazily: importing the package (or `carry_settings`) does not
import JAX, so CLIs build their flags fast.
"""

from __future__ import annotations

_LAZY = {
    **dict.fromkeys(["Adapter", "AdapterConfig", "load_adapter", "save_adapter", "train_adapter"], "adapters"),
    **dict.fromkeys(["AffineMap", "apply_direction", "fit_affine", "paired_token_states"], "affine"),
    **dict.fromkeys(["ALL_METHODS", "METHODS", "EvalConfig", "evaluate"], "evaluate"),
    **dict.fromkeys(["AlignInputError", "Trials", "find_models", "make_trials", "pair_table"], "stf_jax.extract.rundir"),
    **dict.fromkeys(["PCA", "fit_pca", "k_for_variance", "project", "reconstruct"], "pca"),
    **dict.fromkeys(["Procrustes", "ProcrustesMap", "apply_procrustes_map", "fit_procrustes", "fit_procrustes_map"],
                    "procrustes"),
    **dict.fromkeys(["markdown", "write_results"], "report"),
    "CarrySettings": "carry_settings",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    from .. import _lazy_attribute

    return _lazy_attribute(__name__, _LAZY, name)
