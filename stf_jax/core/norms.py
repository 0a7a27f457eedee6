"""Typical |h|: the residual-stream scale that steering strengths are measured in, computed one way.

A strength "0.15" (stf_jax `--scale mean-norm`), a transfer's "relative" strength and the judges' steering
scale all mean "this fraction of the layer's mean residual norm". The first token of every row (BOS, an
attention sink whose norm is often 10-100x the others') is left out, or it would set the scale.

`model` is anything with `encode(texts, padding_side=, add_special_tokens=) -> (ids, mask)` and
`hidden_states(ids, mask, layers) -> [L, B, S, D]` (a `stf_jax.Model`): this module imports no stage.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def residual_norms(h: np.ndarray, attention_mask: np.ndarray) -> tuple[float, int]:
    """(sum of |h|, count) over real tokens after each row's first. h: [B, S, D]; pool sums and counts
    across batches, then divide: the layer's mean residual norm."""
    mask = np.asarray(attention_mask).astype(bool)
    later = mask & (np.cumsum(mask, axis=-1) > 1)
    norms = np.linalg.norm(np.asarray(h, np.float32), axis=-1)
    return float(norms[later].sum()), int(later.sum())


def typical_norms(model, texts: Sequence[str], layers: Sequence[int], batch: int | None = 16,
                  padding_side: str = "right", add_special_tokens: bool = True) -> dict[int, float]:
    """{HF layer: mean |h| over real tokens after each row's first} on `texts`, `batch` texts per forward
    (None: all at once). Padding side does not change the value (masked tokens are left out)."""
    layers = sorted({int(lay) for lay in layers})
    texts = list(texts)
    step = len(texts) if batch is None else batch
    total, count = np.zeros(len(layers)), 0
    for i in range(0, len(texts), max(step, 1)):
        ids, mask = model.encode(texts[i:i + step], padding_side=padding_side, add_special_tokens=add_special_tokens)
        h = np.asarray(model.hidden_states(ids, mask, layers))  # [L, B, S, D]
        for j in range(len(layers)):
            t, c = residual_norms(h[j], mask)
            total[j] += t
        count += c
    return {lay: float(total[j] / max(count, 1)) for j, lay in enumerate(layers)}
