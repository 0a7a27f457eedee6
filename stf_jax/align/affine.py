"""Affine maps y ≈ x A + b fitted in closed form (least squares or ridge), as in the LRT paper.

Fitted either on paired steering vectors (one row per contrast pair) or on paired token hidden states
from a corpus run (`paired_token_states`). A steering vector is a *difference* of hidden states, so
transferring one through a map fitted on hidden states uses the linear part only (the bias cancels):
`apply_direction(m, v) = v A`. A map fitted on the vectors themselves predicts vectors with `apply`.

`ridge` is relative: the penalty is ridge · mean eigenvalue of the centered source Gram, so one value
means the same across layers and models; ridge = 0 is the minimum-norm least-squares solution
(`numpy.linalg.lstsq`), safe when d_s > n.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .ops import mm, weighted_mean


class AffineMap(NamedTuple):
    """A: [d_s, d_t], b: [d_t]. Calling it applies x A + b (`apply`)."""

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [..., d_s] -> [..., d_t]."""
        return apply(self, x)


@partial(jax.jit, static_argnames=("ridge",))
def fit_affine(x_s: jax.Array, x_t: jax.Array, w: jax.Array, ridge: float = 0.0) -> AffineMap:
    """Least squares over the rows of x_s [n, d_s] → x_t [n, d_t] with weight 1 in w [n]."""
    mu_s, mu_t = weighted_mean(x_s, w), weighted_mean(x_t, w)
    xc = (x_s - mu_s) * w[:, None]
    yc = (x_t - mu_t) * w[:, None]
    if ridge == 0.0:
        a = jnp.linalg.lstsq(xc, yc)[0]
    else:
        gram = mm(xc.T, xc)
        lam = ridge * jnp.trace(gram) / gram.shape[0]
        a = jax.scipy.linalg.solve(gram + lam * jnp.eye(gram.shape[0], dtype=gram.dtype), mm(xc.T, yc),
                                   assume_a="pos")
    return AffineMap(a, mu_t - mm(mu_s, a))


def apply(m: AffineMap, x: jax.Array) -> jax.Array:
    """x: [..., d_s] -> x A + b (states, or vectors when the map was fitted on vectors)."""
    return mm(x, m.weight) + m.bias


def apply_direction(m: AffineMap, v: jax.Array) -> jax.Array:
    """v: [..., d_s] -> v A (a difference of states: the bias cancels)."""
    return mm(v, m.weight)


def paired_token_states(run_dir: str | Path, source: str, target: str, layer_s: int, layer_t: int,
                        pairing: str = "token") -> tuple[np.ndarray, np.ndarray]:
    """Rows of hidden states from a corpus run (token mode), paired across two models.

    pairing="token": row i of both is the same (text, token position); needs identical tokenization
    (same tokenizer family), else a clear error. pairing="text_mean": one row per text, the mean of
    its tokens' states, which pairs any two tokenizers.
    Returns (x_s [m, d_s], x_t [m, d_t]).
    """
    from ..extract.store import load_layer, read_manifest

    manifest = read_manifest(run_dir)
    if manifest.get("kind") != "corpus":
        raise ValueError(f"{run_dir} is a {manifest.get('kind')!r} run; token-state fitting needs a corpus run "
                         "(python -m stf_jax.extract --corpus ...)")
    a, b = load_layer(run_dir, source, layer_s), load_layer(run_dir, target, layer_t)
    if pairing == "token":
        same = (a["text_index"].shape == b["text_index"].shape and np.array_equal(a["text_index"], b["text_index"])
                and np.array_equal(a["token_index"], b["token_index"]))
        if not same:
            raise ValueError(f"{source} and {target} tokenize the corpus differently ({len(a['text_index'])} vs "
                             f"{len(b['text_index'])} token rows), so tokens cannot be paired; use pairing='text_mean'")
        return a["states"], b["states"]
    if pairing == "text_mean":
        texts_a, texts_b = np.unique(a["text_index"]), np.unique(b["text_index"])
        if not np.array_equal(texts_a, texts_b):
            raise ValueError(f"{source} and {target} have states for different texts ({len(texts_a)} vs "
                             f"{len(texts_b)}); were they extracted from the same corpus?")

        def text_means(t):
            _, inverse, counts = np.unique(t["text_index"], return_inverse=True, return_counts=True)
            sums = np.zeros((len(counts), t["states"].shape[1]), np.float64)
            np.add.at(sums, inverse, t["states"])
            return (sums / counts[:, None]).astype(np.float32)

        return text_means(a), text_means(b)
    raise ValueError(f"pairing must be 'token' or 'text_mean', got {pairing!r}")
