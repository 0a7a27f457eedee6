"""Planted shared structure: vectors for several models that share one latent space up to a rotation,
a scale and noise, with a trait level and an instance level (the seed's v_i = μ_trait + ε_i). For tests
and benchmarks, where the right answer is known.

Model m: x = μ_m + s_m · z Q_m + noise, with z = c_trait + e (latent, [n, r], variances j^-decay along
axis j), Q_m [r, d_m] orthonormal rows, noise N(0, noise²/d_m) per coordinate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def orthonormal_rows(rng: np.random.Generator, r: int, d: int) -> np.ndarray:
    """[r, d] with orthonormal rows (r <= d)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, r), dtype=np.float32))
    return np.ascontiguousarray(q.T)


def planted_vectors(traits: np.ndarray, dims: Sequence[int], rank: int, *, trait_strength: float = 1.0,
                    noise: float = 0.1, decay: float = 0.5, scales: Sequence[float] | None = None,
                    mean_norm: float = 1.0, normalize: bool = False, seed: int = 0) -> list[np.ndarray]:
    """One [n, d_m] float32 array per model for pairs with integer trait labels `traits` [n]."""
    rng = np.random.default_rng(seed)
    n = len(traits)
    n_traits = int(np.max(traits)) + 1
    sd = (np.arange(1, rank + 1, dtype=np.float32) ** (-decay / 2)).astype(np.float32)
    centers = rng.standard_normal((n_traits, rank), dtype=np.float32) * sd * trait_strength
    z = centers[traits] + rng.standard_normal((n, rank), dtype=np.float32) * sd
    scales = scales or [1.0 + 0.25 * m for m in range(len(dims))]
    out = []
    for m, d in enumerate(dims):
        q = orthonormal_rows(rng, rank, d)
        mu = rng.standard_normal(d, dtype=np.float32)
        mu *= mean_norm / np.linalg.norm(mu)
        x = z @ q
        x *= np.float32(scales[m])
        x += mu
        x += rng.standard_normal((n, d), dtype=np.float32) * np.float32(noise / np.sqrt(d))
        if normalize:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        out.append(x)
        del q
    return out
