"""Fitted transfer maps for steering: one map per method on one training split, applied to trait vectors.

The protocol (`evaluate`) scores maps by cosine over held-out pairs; steering needs the maps themselves,
fitted once on the training pairs, to carry each trait's source vector into the target model:

    maps = fit_transfer_maps(x_s, x_t, w_train, w_val, methods=("procrustes", "affine", "linear"), k=64)
    v_t_hat = maps["affine"](trait_vectors(x_s, w_train, traits)["formality"])

Every map takes and returns [..., d] arrays (numpy in, numpy out).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import adapters as adapters_lib
from . import affine as affine_lib
from .baselines import identity
from .pca import fit_pca
from .procrustes import fit_procrustes_map, transfer

MAP_METHODS = ("procrustes", "affine", "linear", "lowrank", "mlp")

Map = Callable[[np.ndarray], np.ndarray]


def fit_transfer_maps(x_s: np.ndarray, x_t: np.ndarray, w_train: np.ndarray, w_val: np.ndarray | None = None,
                      methods: Sequence[str] = MAP_METHODS, k: int = 64, ridge: float = 0.1,
                      rotation_only: bool = False,
                      adapter: adapters_lib.AdapterConfig = adapters_lib.AdapterConfig(),
                      seed: int = 0) -> dict[str, Map]:
    """Maps source vectors [.., d_s] to target vectors [.., d_t], fitted on rows with w_train = 1.

    Adapters train on w_train − w_val and early-stop on w_val (the protocol's split of the training side);
    procrustes and affine fit on all of w_train. `identity` (zero-pad / truncate) is always included."""
    unknown = sorted(set(methods) - set(MAP_METHODS))
    if unknown:
        raise ValueError(f"unknown transfer method(s) {unknown}; choose from {list(MAP_METHODS)}")
    xs, xt = jnp.asarray(x_s, jnp.float32), jnp.asarray(x_t, jnp.float32)
    w = jnp.asarray(w_train, jnp.float32)
    d_t = xt.shape[1]
    maps: dict[str, Map] = {"identity": lambda v: np.asarray(identity(jnp.asarray(v), d_t))}
    if "procrustes" in methods:
        n = int(w.sum())
        k = min(k, n - 1, xs.shape[1], xt.shape[1])
        pm = fit_procrustes_map(fit_pca(xs, w, k), fit_pca(xt, w, k), xs, xt, w, rotation_only=rotation_only)
        maps["procrustes"] = lambda v, pm=pm: np.asarray(transfer(pm, jnp.asarray(v)))
    if "affine" in methods:
        am = affine_lib.fit_affine(xs, xt, w, ridge=ridge)
        maps["affine"] = lambda v, am=am: np.asarray(affine_lib.apply(am, jnp.asarray(v)))
    kinds = [m for m in methods if m in adapters_lib.KINDS]
    if kinds:
        if w_val is None:
            raise ValueError("adapters need a validation slice of the training rows (w_val) to early-stop")
        wv = jnp.asarray(w_val, jnp.float32)
        for kind in kinds:
            acfg = dataclasses.replace(adapter, kind=kind, orthogonality=0.0 if kind == "mlp" else adapter.orthogonality)
            res = adapters_lib.train_adapter(acfg, xs, xt, w - wv, wv, jax.random.PRNGKey(seed))
            maps[kind] = lambda v, kind=kind, res=res: np.asarray(
                adapters_lib.apply(kind, res.params, res.stats, jnp.asarray(v)))
    return maps


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
