"""Statistics every stage reports with: per-pair slopes, percentile bootstrap intervals (paired where
compared), and their one text form, "mean [lo, hi]" (`format_ci`).

Every interval resamples contrast pairs (the unit that was sampled); comparisons resample the same pair
indices on both sides, so they are paired bootstrap intervals as in the Pythia negative result.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def slopes(alphas: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Least-squares slope of each pair's propensity over alpha. curves: [A, P] -> [P]."""
    a = np.asarray(alphas, np.float64)
    ac = a - a.mean()
    c = np.asarray(curves, np.float64)
    return (ac[:, None] * (c - c.mean(0))).sum(0) / (ac * ac).sum()


def interval(samples: np.ndarray, point: float) -> dict[str, float]:
    """{mean (the point estimate), lo, hi} from bootstrap samples (2.5 / 97.5 percentiles)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return {"mean": float(point), "lo": float("nan"), "hi": float("nan")}
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return {"mean": float(point), "lo": float(lo), "hi": float(hi)}


def resample_indices(n: int, n_boot: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """[n_boot, n] indices drawn with replacement (within each group when `groups` is given)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.integers(0, n, (n_boot, n))
    groups = np.asarray(groups)
    out = np.empty((n_boot, n), np.int64)
    for g in np.unique(groups):
        rows = np.nonzero(groups == g)[0]
        out[:, rows] = rows[rng.integers(0, len(rows), (n_boot, len(rows)))]
    return out


def bootstrap(fn: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int,
              groups: np.ndarray | None = None) -> dict[str, float]:
    """fn(indices [n]) -> scalar, evaluated on all rows (point) and on resamples (interval)."""
    idx = resample_indices(n, n_boot, seed, groups)
    return interval(np.array([fn(i) for i in idx]), fn(np.arange(n)))


def mean_ci(values: np.ndarray, n_boot: int, seed: int, groups: np.ndarray | None = None) -> dict[str, float]:
    """Mean with a bootstrap interval, vectorised. values: [n]."""
    v = np.asarray(values, np.float64)
    idx = resample_indices(len(v), n_boot, seed, groups)
    return interval(v[idx].mean(1), v.mean())


def curve_ci(curves: np.ndarray, n_boot: int, seed: int) -> dict[str, list[float]]:
    """Mean curve over pairs with a pointwise bootstrap band. curves: [A, P]."""
    c = np.asarray(curves, np.float64)
    idx = resample_indices(c.shape[1], n_boot, seed)
    boot = c[:, idx].mean(-1)  # [A, n_boot]
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
    return {"mean": c.mean(1).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


MISSING = "—"


def format_ci(ci: dict | None, digits: int = 2) -> str:
    """'mean [lo, hi]' of a {mean, lo, hi} dict (the one way every table and log line writes an interval);
    'mean' alone when the interval is missing or not finite; '—' when the mean is."""
    def num(x) -> float:
        try:
            return float(x)
        except (TypeError, ValueError):
            return float("nan")

    if not isinstance(ci, dict):
        m = num(ci)
        return f"{m:.{digits}f}" if np.isfinite(m) else MISSING
    m, lo, hi = num(ci.get("mean")), num(ci.get("lo")), num(ci.get("hi"))
    if not np.isfinite(m):
        return MISSING
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{m:.{digits}f}"
