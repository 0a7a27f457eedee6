"""Propensity (seed 003 style): how much more likely the model finds the positive continuation.

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


@partial(jax.jit, static_argnames=("cfg", "dtype"))
def _mean_logprob(params, ids, mask, target, intervention, *, cfg, dtype):
    """Mean log-prob of the tokens flagged in `target` [B, S], each predicted from its prefix."""
    logits, _ = decoder.logits_and_hidden_states(params, ids, mask, intervention, cfg=cfg, dtype=dtype)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    token_lp = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    m = target[:, 1:].astype(jnp.float32)
    return (token_lp * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)


def encode_continuations(model: Model, prompts: Sequence[str], continuations: Sequence[str]):
    """Right-padded prompt+continuation ids, attention mask and continuation mask (numpy)."""
    tok = model.tokenizer
    rows, targets = [], []
    for prompt, cont in zip(prompts, continuations):
        p = tok(prompt, add_special_tokens=True)["input_ids"] if prompt else \
            tok("", add_special_tokens=True)["input_ids"]
        c = tok((" " if prompt else "") + cont, add_special_tokens=False)["input_ids"]
        if not p:  # a model with no BOS: the first continuation token has no prefix to be scored from
            p, c = c[:1], c[1:]
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
