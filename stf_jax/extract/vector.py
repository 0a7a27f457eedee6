"""Contrast pairs -> a `SteeringVector` on a model, in memory: what users of repeng and steering-vectors do
with `ControlVector.train` and `train_steering_vector`, on the forward pass extraction uses.

    model = stf_jax.load_model("smollm2-135m")
    v = stf_jax.train_vector(model, "shipped", trait="formality", layers=-6)
    v = stf_jax.train_vector(model, [("Dear Sir, ...", "hey, ..."), ...], layers="0.6:0.9", method="pca_center")

Methods (per layer; the states are each text's last-token hidden state, as `extract` pools them):
  mean_diff   (default) the seed paper's trait vector: the mean of the pairs' unit difference vectors,
              normalised; the same numbers as a pairs run's `extract.store.trait_vector`.
  pca_diff    repeng's default: the first principal component of the raw differences (centred, as
              scikit-learn's PCA centres them), signed so positives project above their negatives.
  pca_center  repeng's `pca_center`: the first principal component of each side minus the pair's midpoint.
The result is a unit vector per layer in typical-|h| units (`SteeringVector.units`), with the layer's
typical |h| measured on the pairs' texts, so it steers at `DEFAULT_STRENGTH` and saves for llama.cpp.
"""

from __future__ import annotations

import numpy as np

from ..core.vector import SteeringVector
from ..data import ContrastPair
from ..errors import UserError

METHODS = ("mean_diff", "pca_diff", "pca_center")
NORM_TEXTS = 64  # texts the typical |h| is measured on


class TrainVectorError(UserError, ValueError):
    """Arguments of `train_vector` that cannot make a vector (method, pairs, trait)."""


def as_pairs(pairs, trait: str | None = None) -> list[ContrastPair]:
    """ContrastPairs from a dataset name or file ("shipped", a JSONL/CSV/Parquet path), ContrastPairs, or
    (positive, negative) tuples; narrowed to `trait` where the pairs name theirs."""
    from pathlib import Path

    if isinstance(pairs, (str, Path)):
        from ..data import load_pairs

        return load_pairs(str(pairs), traits=[trait] if trait else None)
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, ContrastPair):
            out.append(p)
        elif isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(t, str) for t in p):
            out.append(ContrastPair(id=f"pair-{i}", trait=trait or "custom", positive=p[0], negative=p[1]))
        else:
            raise TrainVectorError(f"pairs[{i}]: give (positive, negative) strings or ContrastPairs, not {p!r:.80}")
    if trait and any(isinstance(p, ContrastPair) for p in pairs):
        out = [p for p in out if p.trait == trait]
    return out


def train_vector(model, pairs, layers=-6, method: str = "mean_diff", trait: str | None = None, *,
                 batch_size: int = 32, pooling: str = "last", chat_template: bool = False) -> SteeringVector:
    """A steering vector for `model` from contrast `pairs` at `layers` (any layer spec: -6, 0.67, 10:20, all).

    model: a loaded Model or a name/path for `load_model`. pairs: a dataset name or file, ContrastPairs, or
    (positive, negative) string tuples; trait: keep that trait's pairs (and name the vector). method:
    mean_diff (default), pca_diff or pca_center (see the module doc)."""
    from ..core.norms import typical_norms
    from ..models.loading import load_model
    from ..models.model import Model
    from .driver import ExtractOptions, pooled_pairs

    if method not in METHODS:
        raise TrainVectorError(f"method {method!r}: choose from {list(METHODS)}")
    chosen = as_pairs(pairs, trait)
    if len(chosen) < (1 if method == "mean_diff" else 2):
        raise TrainVectorError(f"{len(chosen)} pair(s){f' of trait {trait!r}' if trait else ''}: {method} needs "
                               f"{'one' if method == 'mean_diff' else 'two'} or more")
    if not isinstance(model, Model):
        model = load_model(str(model))
    opts = ExtractOptions(batch_size=batch_size, pooling=pooling, chat_template=chat_template, progress=False)
    states = pooled_pairs(model, chosen, layers, opts)
    dirs = {lay: _direction(method, s, lay) for lay, s in states.items()}
    texts = [t for p in chosen[:NORM_TEXTS // 2] for t in (p.positive, p.negative)]
    norms = typical_norms(model, texts, sorted(dirs))
    names = sorted({p.trait for p in chosen})
    return SteeringVector(dirs, model=model.name, model_type=model.config.model_type,
                          trait=trait or (names[0] if len(names) == 1 else "+".join(names)), method=method,
                          units="typical_norm", typical_norms=norms,
                          provenance={"n_pairs": str(len(chosen)), "pooling": pooling})


def _direction(method: str, s: dict[str, np.ndarray], layer: int | None = None) -> np.ndarray:
    """One layer's unit direction [D] from its pooled states (positive, negative, diff, vectors [n, D])."""
    if method == "mean_diff":
        from .store import unit_mean

        v = unit_mean(s["vectors"])
        if v is None:
            raise TrainVectorError(f"layer {layer}: the pairs' mean difference is zero or not finite (pairs whose "
                                   "two texts give the same state at this layer)")
        return v
    pos, neg = s["positive"].astype(np.float64), s["negative"].astype(np.float64)
    if method == "pca_diff":
        train = pos - neg
    else:  # pca_center
        mid = (pos + neg) / 2
        train = np.concatenate([pos - mid, neg - mid])
    direction = _first_component(train)
    # sign, repeng's rule: flipped only when more pairs have the positive projecting below its negative than
    # above it (ties count for neither side; an even split keeps the PCA sign below)
    above, below = np.mean(pos @ direction > neg @ direction), np.mean(pos @ direction < neg @ direction)
    return (-direction if below > above else direction).astype(np.float32)


def _first_component(x: np.ndarray) -> np.ndarray:
    """The first principal axis of the rows of x (centred), unit length, signed as scikit-learn's PCA signs
    it (`svd_flip(u_based_decision=False)`: the largest-magnitude entry positive), so that where repeng's
    sign rule is undecided both keep the same sign."""
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0] / np.linalg.norm(vt[0])
    return v if v[np.argmax(np.abs(v))] >= 0 else -v

