"""Fit a transfer map on weighted rows and apply it: the one place the judge package touches `stf_jax.align`.

`fit_apply(method, x_s, x_t, w_fit, w_val, v)` mirrors what `stf_jax.align.transfer` does for steering
(procrustes: PCA per model + similarity Procrustes; affine: ridge least squares on vectors; adapters:
optax-trained, early-stopped on `w_val`), and `identity` is the zero-shot baseline (zero-padded /
truncated). When `stf_jax.align` exposes one `fit_map` interface this module is where to switch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

METHODS = ("procrustes", "affine", "linear", "lowrank", "mlp")


def fit_apply(method: str, x_s: np.ndarray, x_t: np.ndarray, w_fit: np.ndarray, v: np.ndarray,
              w_val: np.ndarray | None = None, k: int = 256, ridge: float = 0.1, seed: int = 0) -> np.ndarray:
    """Map rows v [m, d_s] into the target with a map fitted on rows of (x_s, x_t) with w_fit = 1.

    k is capped at (fit rows − 1) and both widths; adapters early-stop on w_val (default: the fit rows)."""
    import jax
    import jax.numpy as jnp

    from ..align import adapters as adapters_lib
    from ..align import affine as affine_lib
    from ..align.baselines import identity
    from ..align.pca import fit_pca
    from ..align.procrustes import fit_procrustes_map, transfer

    xs, xt = jnp.asarray(x_s, jnp.float32), jnp.asarray(x_t, jnp.float32)
    w = jnp.asarray(w_fit, jnp.float32)
    vv = jnp.asarray(v, jnp.float32)
    if method == "identity":
        return np.asarray(identity(vv, xt.shape[1]))
    if method == "procrustes":
        kk = int(min(k, int(np.sum(w_fit)) - 1, xs.shape[1], xt.shape[1]))
        if kk < 1:
            raise ValueError("procrustes needs at least 2 fit rows")
        pm = fit_procrustes_map(fit_pca(xs, w, kk), fit_pca(xt, w, kk), xs, xt, w)
        return np.asarray(transfer(pm, vv))
    if method == "affine":
        return np.asarray(affine_lib.apply(affine_lib.fit_affine(xs, xt, w, ridge=ridge), vv))
    if method in ("linear", "lowrank", "mlp"):
        acfg = dataclasses.replace(adapters_lib.AdapterConfig(), kind=method)
        wv = jnp.asarray(w_val if w_val is not None else w_fit, jnp.float32)
        res = adapters_lib.train_adapter(acfg, xs, xt, w * (1 - wv) if w_val is not None else w, wv,
                                         jax.random.PRNGKey(seed))
        return np.asarray(adapters_lib.apply(method, res.params, res.stats, vv))
    raise ValueError(f"unknown map method {method!r}; choose from identity, {', '.join(METHODS)}")


def centered_cosines(pred: np.ndarray, target: np.ndarray, mu_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row raw and centered cosines (`stf_jax.align.metrics` definitions; 0 where a side has no norm)."""
    def cos(a, b):
        num = np.sum(a * b, -1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    pred, target, mu_t = (np.asarray(a, np.float64) for a in (pred, target, mu_t))
    return cos(pred, target), cos(pred - mu_t, target - mu_t)
