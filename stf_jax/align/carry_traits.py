"""Transferred trait vectors for steering: each trait's source vector carried into the target by each map.

The protocol (`evaluate`) scores maps by cosine over held-out pairs; steering needs the carried vectors:

    carried = transferred_trait_vectors(x_s, x_t, w_train, w_val, traits, ("procrustes", "affine"), k=64)
    v_t_hat = carried["affine"]["formality"]          # [d_t]

With holdout=True (the default) trait t's vector goes through maps fitted without any pair of trait t
(leave-one-trait-out; all folds of a method in one vmapped call), so no transferred vector was a training
target of the map that carries it: the situation of a user transferring a new trait.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import adapters as adapters_lib
from . import maps

# learned maps that carry a trait vector: one-layer maps, s2l (through the source SAE), many-to-one (a stack)
MAP_METHODS = maps.TRANSFER_METHODS + maps.SAE_METHODS + maps.STACKED_METHODS


def trait_vectors(x: np.ndarray, w: np.ndarray, traits: Sequence[str]) -> dict[str, np.ndarray]:
    """The seed paper's trait vector: the mean of a trait's (unit) pair vectors over rows with w = 1."""
    traits = np.asarray(traits)
    w = np.asarray(w) > 0
    out = {}
    for trait in dict.fromkeys(traits.tolist()):
        rows = w & (traits == trait)
        if not rows.any():
            raise ValueError(f"trait {trait!r} has no training rows")
        out[trait] = np.asarray(x)[rows].mean(0).astype(np.float32)
    return out


def unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot normalise a zero or non-finite vector")
    return (np.asarray(v, np.float32) / norm).astype(np.float32)


def _fit_apply(fit, x_s, x_t, w, w_val, key, v, *, settings: maps.FitSettings):
    """Fit one map on rows w (adapters: w − w_val, early-stopped on w_val) and carry v [m, d_s]."""
    return fit(x_s, x_t, w, w_val, key, settings)[0](v)


def transferred_trait_vectors(x_s: np.ndarray, x_t: np.ndarray, w_train: np.ndarray, w_val: np.ndarray,
                              traits: Sequence[str], methods: Sequence[str] = maps.TRANSFER_METHODS,
                              holdout: bool = True, k: int = 64, ridge: float | None = None,
                              rotation_only: bool = False,
                              adapter: adapters_lib.AdapterConfig = adapters_lib.AdapterConfig(),
                              seed: int = 0, only: Sequence[str] | None = None,
                              sources: dict[str, np.ndarray] | None = None,
                              sae: dict[str, Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{method (+ "identity"): {trait: T(source trait vector) [d_t]}} for the traits in `only` (default all).

    holdout=True: trait t's vector goes through maps fitted on the training pairs of every other trait
    (leave-one-trait-out, every fold in one vmapped call per method); False: one map on all training pairs.
    Maps always use every trait's rows, whatever `only` selects.

    A method's source rows are x_s [n, d_s] unless `sources` gives its own (the same pairs, row for row):
    s2l's the SAE's layer, many-to-one's a stack of layers side by side [n, layers * d_s]; the trait vector
    it carries is the mean of those rows, as for every method. sae: s2l's FitSettings fields (sae,
    sae_latents, sae_k: `transfer.fit.sae_fit_settings`). ridge: None takes each method's own default."""
    unknown = sorted(set(methods) - set(MAP_METHODS))
    if unknown:
        raise ValueError(f"unknown transfer method(s) {unknown}; choose from {list(MAP_METHODS)}")
    if any(maps.method(m).needs_sae for m in methods) and not (sae or {}).get("sae"):
        raise ValueError("s2l carries through the source SAE: give sae= (transfer.fit.sae_fit_settings)")
    traits = np.asarray(traits)
    names = list(dict.fromkeys(traits.tolist()))
    if only is not None:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"trait(s) {missing} have no rows; traits: {names}")
        names = [t for t in names if t in set(only)]
    xt = jnp.asarray(x_t, jnp.float32)
    w, wv = np.asarray(w_train, np.float32), np.asarray(w_val, np.float32)
    if holdout:
        keep = np.stack([traits != t for t in names]).astype(np.float32)  # [T, n] folds
        folds_w, folds_v = keep * w, keep * wv
    else:
        folds_w, folds_v = w[None], wv[None]
    n_min = int(folds_w.sum(1).min())
    k = min(k, n_min - 1, np.shape(x_s)[1], xt.shape[1])
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(len(folds_w)) + seed)
    out = {}
    for method in ("identity", *methods):
        rows = np.asarray((sources or {}).get(method, x_s), np.float32)  # [n, d_m]
        src = trait_vectors(rows, w_train, traits)
        stacked = np.stack([src[t] for t in names])  # [T, d_m]
        inputs = stacked[:, None, :] if holdout else stacked[None]  # [T, 1, d_m] per fold, or [1, T, d_m]
        settings = maps.FitSettings(k=k, ridge=maps.default_ridge(method, ridge), rotation_only=rotation_only,
                                    adapter=adapter, **((sae or {}) if maps.method(method).needs_sae else {}))
        fn = partial(_fit_apply, maps.method(method).fit, jnp.asarray(rows), xt, settings=settings)
        got = np.asarray(jax.vmap(fn)(jnp.asarray(folds_w), jnp.asarray(folds_v), keys, jnp.asarray(inputs)))
        got = got[:, 0] if holdout else got[0]  # [T, d_t]
        out[method] = {t: got[i].astype(np.float32) for i, t in enumerate(names)}
    return out
