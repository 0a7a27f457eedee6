"""Fit a transfer map on weighted rows and apply it: the one place the judge package touches `stf_jax.align`.

`fit_apply(method, x_s, x_t, w_fit, v)` fits through the alignment method table (`stf_jax.align.maps`),
the same fitters the protocol scores and `python -m stf_jax.transfer` deploys; `identity` is the
zero-shot baseline (zero-padded / truncated).
"""

from __future__ import annotations

import numpy as np



def fit_apply(method: str, x_s: np.ndarray, x_t: np.ndarray, w_fit: np.ndarray, v: np.ndarray,
              w_val: np.ndarray | None = None, k: int = 256, ridge: float = 0.1, seed: int = 0) -> np.ndarray:
    """Map rows v [m, d_s] into the target with a map fitted on rows of (x_s, x_t) with w_fit = 1.

    k (Procrustes) is capped at (fit rows − 1) and both widths; adapters hold out w_val (⊂ w_fit) for early
    stopping (default: every tenth fit row, as `fit_map`)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from ..align.adapters import AdapterConfig
    from ..align.maps import FitSettings, fit_map

    kk = int(min(k, int(np.sum(w_fit)) - 1, x_s.shape[1], x_t.shape[1]))
    if kk < 1:
        raise ValueError("a map needs at least 2 fit rows")
    settings = FitSettings(k=kk, ridge=ridge, adapter=dataclasses.replace(AdapterConfig(), seed=seed))
    wv = None if w_val is None else np.asarray(w_val, np.float32) * np.asarray(w_fit, np.float32)
    m, _ = fit_map(method, x_s, x_t, w_fit, wv, jax.random.PRNGKey(seed), settings=settings)
    return np.asarray(m(jnp.asarray(v, jnp.float32)))


def centered_cosines(pred: np.ndarray, target: np.ndarray, mu_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row raw and centered cosines (`stf_jax.align.metrics` definitions; 0 where a side has no norm)."""
    def cos(a, b):
        num = np.sum(a * b, -1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    pred, target, mu_t = (np.asarray(a, np.float64) for a in (pred, target, mu_t))
    return cos(pred, target), cos(pred - mu_t, target - mu_t)
