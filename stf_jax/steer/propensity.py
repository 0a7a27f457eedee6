"""Propensity (the LRT paper style): how much more likely the model finds the positive continuation.

    propensity = mean over pairs of [ log P(positive | prompt) - log P(negative | prompt) ] / tokens

Each side's log-probability is averaged over its own tokens (token-normalised), so length
differences between the sides do not dominate. Steering enters as an `Intervention` built per batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..models import decoder
from ..models.model import Model


def _masked_mean_logprob(logits, targets, weights):
    """Mean over positions with weight 1 of log softmax(logits)[target]. logits [B, C, V], targets/weights [B, C]."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    token_lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    w = weights.astype(jnp.float32)
    return (token_lp * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


@partial(jax.jit, static_argnames=("cfg", "dtype"))
def _mean_logprob(params, ids, mask, target, intervention, *, cfg, dtype):
    """Mean log-prob of the tokens flagged in `target` [B, S], each predicted from its prefix."""
    logits, _ = decoder.logits_and_hidden_states(params, ids, mask, intervention, cfg=cfg, dtype=dtype)
    return _masked_mean_logprob(logits[:, :-1], ids[:, 1:], target[:, 1:])


def _pair_tokens(tok, prompt: str, cont: str) -> tuple[list[int], list[int]]:
    """(prompt ids with special tokens, continuation ids); with no BOS and no prompt, the first
    continuation token becomes the prefix (it has nothing to be scored from)."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    c = tok((" " if prompt else "") + cont, add_special_tokens=False)["input_ids"]
    if not p:
        p, c = c[:1], c[1:]
    return p, c


def first_difference(model: Model, prompt: str, positive: str, negative: str) -> int | None:
    """How many continuation tokens propensity must score to see a pair's two sides differ (the 1-based
    position of their first differing token), or None when they tokenize the same."""
    a, b = _pair_tokens(model.tokenizer, prompt, positive), _pair_tokens(model.tokenizer, prompt, negative)
    if a == b:
        return None
    if a[0] != b[0]:  # the sides differ inside the prefix (no prompt, no BOS): the first scored token shows it
        return 1
    return next((i + 1 for i, (x, y) in enumerate(zip(a[1], b[1])) if x != y), min(len(a[1]), len(b[1])) + 1)


def encode_continuations(model: Model, prompts: Sequence[str], continuations: Sequence[str]):
    """Right-padded prompt+continuation ids, attention mask and continuation mask (numpy)."""
    tok = model.tokenizer
    rows, targets = [], []
    for prompt, cont in zip(prompts, continuations):
        p, c = _pair_tokens(tok, prompt, cont)
        rows.append(p + c)
        targets.append([0] * len(p) + [1] * len(c))
    width = max(map(len, rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros_like(ids)
    target = np.zeros_like(ids)
    for i, (r, t) in enumerate(zip(rows, targets)):
        ids[i, : len(r)], mask[i, : len(r)], target[i, : len(t)] = r, 1, t
    return ids, mask, target


def mean_logprobs(model: Model, prompts: Sequence[str], continuations: Sequence[str],
                  intervention_for: Callable[[np.ndarray], decoder.Intervention] | None = None,
                  batch_size: int = 16) -> np.ndarray:
    """Token-normalised log P(continuation | prompt) for each row; `intervention_for(mask)` steers."""
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, target = encode_continuations(model, prompts[start:start + batch_size],
                                                 continuations[start:start + batch_size])
        iv = intervention_for(mask) if intervention_for else None
        out.append(np.asarray(_mean_logprob(model.params, ids, mask, target, iv, cfg=model.config,
                                            dtype=model.dtype)))
    return np.concatenate(out)


def propensity(model: Model, prompts: Sequence[str], positives: Sequence[str], negatives: Sequence[str],
               intervention_for=None, batch_size: int = 16) -> np.ndarray:
    """Per pair: mean log P(positive | prompt) - mean log P(negative | prompt)."""
    pos = mean_logprobs(model, prompts, positives, intervention_for, batch_size)
    neg = mean_logprobs(model, prompts, negatives, intervention_for, batch_size)
    return pos - neg


# ------------------------------------------------------------------ steering sweeps from a cached prefix


def encode_scored(model: Model, prompts: Sequence[str], continuations: Sequence[str], max_tokens: int,
                  width: int | None = None):
    """Right-padded rows scoring only the first `max_tokens` continuation tokens, at a fixed width so one
    compiled program serves every batch: ids/mask [B, W], head_index/target_ids/target_mask [B, max_tokens]
    (head_index[b, c] is the position whose logits predict continuation token c)."""
    tok = model.tokenizer
    rows, starts = [], []
    for prompt, cont in zip(prompts, continuations):
        p, c = _pair_tokens(tok, prompt, cont)
        rows.append(p + c[:max_tokens])
        starts.append(len(p))
    need = max(map(len, rows))
    width = need if width is None else width
    if need > width:
        raise ValueError(f"a prompt + continuation needs {need} tokens, more than the width {width}")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    b = len(rows)
    ids = np.full((b, width), pad, np.int32)
    mask = np.zeros_like(ids)
    head_index = np.zeros((b, max_tokens), np.int32)
    target_ids = np.zeros((b, max_tokens), np.int32)
    target_mask = np.zeros((b, max_tokens), np.float32)
    for i, (r, s) in enumerate(zip(rows, starts)):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
        n = len(r) - s
        head_index[i, :n] = np.arange(s - 1, len(r) - 1)
        target_ids[i, :n] = r[s:]
        target_mask[i, :n] = 1.0
    return ids, mask, head_index, target_ids, target_mask


@partial(jax.jit, static_argnames=("cfg", "start", "dtype"))
def scored_logprob_from(params, h, ids, mask, head_index, target_ids, target_mask, *, cfg, start: int, dtype):
    """Mean log-prob of the target tokens [B], running blocks start.. on h [B, S, D] = hidden_states[start]."""
    logits = decoder.logits_from(params, h, ids, mask, cfg=cfg, start=start, dtype=dtype,
                                 head_index=head_index)  # [B, C, V]
    return _masked_mean_logprob(logits, target_ids, target_mask)


def steered_layer(model: Model, layer) -> int:
    """`layer` as an HF hidden-state index that additive steering can resume from: a block output 1..n-1."""
    from ..errors import SteeringInputError

    layer = model.resolve_layers([layer])[0]
    if not 1 <= layer < model.config.n_layers:
        raise SteeringInputError(f"steer a block output 1..{model.config.n_layers - 1}, not hidden-state index "
                                 f"{layer} (0 is the embeddings; the last index is after the final norm)")
    return layer


class PrefixScorer:
    """Propensity of contrast pairs under additive steering at one layer, for many (vector, alpha).

    The blocks before the steered layer do not depend on the steering vector, so their output is
    computed once; each (vector, alpha) reruns only the blocks after it. Exact: adding alpha * v at
    hidden_states[layer] and continuing is what the full steered forward computes (tested).
    Steering covers every real token (prompt and continuation)."""

    def __init__(self, model: Model, layer: int, prompts: Sequence[str], positives: Sequence[str],
                 negatives: Sequence[str], max_tokens: int = 16, width: int | None = None):
        layer = steered_layer(model, layer)
        self.model, self.layer, self.n = model, layer, len(prompts)
        batch = encode_scored(model, list(prompts) * 2, list(positives) + list(negatives), max_tokens, width)
        self.ids, self.mask, self.head_index, self.target_ids, self.target_mask = (jnp.asarray(a) for a in batch)
        self.h = decoder.hidden_states(model.params, self.ids, self.mask, cfg=model.config, layers=(layer,),
                                       dtype=model.dtype)[0]  # [2P, W, D]
        self.positions = self.mask.astype(self.h.dtype)[..., None]

    def mean_norm(self) -> tuple[float, int]:
        """(sum of |h|, token count) over the tokens after the first: pooled into the layer's mean norm."""
        from ..core.norms import residual_norms

        return residual_norms(np.asarray(self.h), np.asarray(self.mask))

    def propensity(self, vector: np.ndarray | None = None, alpha: float = 0.0) -> np.ndarray:
        """[P] log P(+|prompt) − log P(−|prompt) with h += alpha * vector at every real token."""
        h = self.h
        if vector is not None and alpha != 0.0:
            h = h + jnp.asarray(alpha * np.asarray(vector, np.float32), h.dtype) * self.positions
        lp = np.asarray(scored_logprob_from(self.model.params, h, self.ids, self.mask, self.head_index,
                                            self.target_ids, self.target_mask, cfg=self.model.config,
                                            start=self.layer, dtype=self.model.dtype))
        return lp[: self.n] - lp[self.n:]
