"""Array helpers shared by the alignment modules.

Conventions for all of stf_jax.align: vectors are rows (`x @ W`), `n` = pairs, `d_s`/`d_t` = source and
target widths, `k` = PCA components, `T` = trials. Subsets of rows (a trial's train or test split) are
0/1 row weights `w: [n]` rather than gathered copies, so trials whose splits differ in size still stack
into one array and run under one `vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """Full-f32 matmul. JAX's default f32 matmul is TF32/bf16-pass on GPUs and TPUs, which is too coarse
    for covariances fed to eigh/SVD."""
    return jnp.matmul(a, b, precision=HIGHEST)


def weighted_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    """x: [n, d], w: [n] -> [d], the mean of the rows with weight 1."""
    return mm(w, x) / jnp.sum(w)


def weighted_gram(a: jax.Array, b: jax.Array, w: jax.Array) -> jax.Array:
    """a: [n, p], b: [n, q], w: [n] -> [p, q] = aᵀ diag(w) b."""
    return mm((a * w[:, None]).T, b)


def symmetric_gram(x: jax.Array, width: int = 512) -> jax.Array:
    """x: [n, d] -> xᵀx [d, d] from the column blocks on and above the diagonal, mirrored below.

    BLAS computes xᵀx with syrk (half the products); XLA:CPU runs it as one dot, which at paper scale
    (n 52k, d 4,096) reaches a third of this CPU's matmul rate. Blocks `width` columns wide skip the
    products below the diagonal and keep each dot's output small: 2.9x faster there (one dot 25.8 s,
    512-wide blocks 9.0 s, the same sums up to f32 rounding)."""
    d = x.shape[1]
    edges = list(range(0, d, width)) + [d]
    if len(edges) <= 2:
        return mm(x.T, x)
    parts = [x[:, a:b] for a, b in zip(edges[:-1], edges[1:])]
    upper = {(i, j): mm(parts[i].T, parts[j]) for i in range(len(parts)) for j in range(i, len(parts))}
    return jnp.block([[upper[(i, j)] if i <= j else upper[(j, i)].T for j in range(len(parts))]
                      for i in range(len(parts))])


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den with 0 where den is 0 (a zero prediction has no direction: cosine 0, not NaN)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def map_batched(f, xs, batch_size: int | None = None):
    """`lax.map` over the leading axis, `batch_size` problems per vmapped chunk (None: all in one vmap).

    The memory knob for stacked problems: one vmap is fastest while everything fits, chunks bound the
    peak when each problem holds an [n, d] intermediate (paper-scale PCA)."""
    leaves = jax.tree_util.tree_leaves(xs)
    n = leaves[0].shape[0]
    if batch_size is None or batch_size >= n:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=max(int(batch_size), 1))
