"""Fluency guard: evidence that a judge moved because the text changed style, not because it broke.

Two measures per generated text, compared with the unsteered generation of the same prompt:
- `repetition_rate`: the share of word 3-grams that repeat an earlier 3-gram of the same text
  (0 = no repeats; "the the the the" → 1.0; texts under 4 words → 0). Degenerate steering loops.
- `unsteered_logprob`: the mean per-token log-probability the *unsteered* target model assigns to the
  completion after the (chat-formatted) prompt. Fluent restyling costs little; word salad and loops of
  rare tokens cost nats. It is the model's own judgment, so it guards fluency, not the trait.

`guard(...)` flags a condition when either measure drifts past a threshold (defaults: a drop of more
than 1.0 nat/token in mean log-prob, or a rise of more than 0.15 in repetition rate, against the
unsteered texts of the same prompts). A judge change under a failed guard is reported but not trusted.

Blind spots: fluent but off-topic text passes; a model that already repeats itself unsteered sets a high
baseline; re-tokenizing the decoded completion can differ slightly from the generated tokens.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Sequence

import numpy as np

from ..core.chat import chat_text, has_chat_template
from ..core.text import words

MAX_LOGPROB_DROP = 1.0
MAX_REPETITION_RISE = 0.15


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of word n-grams (lowercased) that already occurred earlier in the text."""
    ws = [w.lower() for w in words(text)]
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    if len(grams) < 2:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def repetition_rates(texts: Sequence[str], n: int = 3) -> np.ndarray:
    return np.array([repetition_rate(t, n) for t in texts], np.float64)


def guard(logprob_drop: float, repetition_rise: float, max_drop: float = MAX_LOGPROB_DROP,
          max_rise: float = MAX_REPETITION_RISE) -> bool:
    """True when the steered texts stay fluent: mean log-prob drop and repetition rise within bounds."""
    return bool(np.isfinite(logprob_drop) and logprob_drop <= max_drop and repetition_rise <= max_rise)


# ---------------------------------------------------------------- the unsteered model's log-probability


@lru_cache(maxsize=1)
def _completion_logprob():
    """The jitted scorer, built on first use (importing the judges does not import JAX)."""
    import jax
    import jax.numpy as jnp

    from ..models import decoder

    @partial(jax.jit, static_argnames=("cfg", "dtype"))
    def run(params, ids, mask, head_index, target_ids, target_mask, *, cfg, dtype):
        model = decoder.Decoder(cfg, dtype=dtype, logits=True)
        logits = model.apply({"params": params}, ids, mask, None, head_index=head_index).logits  # [B, C, V]
        logp = jax.nn.log_softmax(logits, axis=-1)
        tok = jnp.take_along_axis(logp, target_ids[..., None], axis=-1)[..., 0]
        return (tok * target_mask).sum(-1) / jnp.maximum(target_mask.sum(-1), 1.0)

    return run


def format_prompts(model, prompts: Sequence[str], chat_template: bool) -> tuple[list[str], bool]:
    """The prompt strings `generate` feeds the model (chat-formatted when asked and available) and whether
    special tokens are added when encoding them (not after a chat template, which writes its own)."""
    tok = model.tokenizer
    if chat_template and has_chat_template(tok):
        return [chat_text(tok, p) for p in prompts], False
    return list(prompts), True


def unsteered_logprob(model, prompts: Sequence[str], completions: Sequence[str], chat_template: bool = True,
                      max_tokens: int = 64, batch_size: int = 8) -> np.ndarray:
    """Mean per-token log P(completion | prompt) under the unsteered model (NaN for an empty completion).

    Rows are right-padded to one width (a multiple of 32) and batches to `batch_size`, so a whole
    evaluation compiles once; the LM head runs only at the completion's positions (first `max_tokens`)."""
    import jax.numpy as jnp

    tok = model.tokenizer
    texts, special = format_prompts(model, prompts, chat_template)
    rows, starts, n_cont = [], [], []
    for p, c in zip(texts, completions):
        pi = tok(p, add_special_tokens=special)["input_ids"]
        ci = tok(c, add_special_tokens=False)["input_ids"][:max_tokens] if c else []
        rows.append(pi + ci)
        starts.append(len(pi))
        n_cont.append(len(ci))
    # one width per prompt set (longest prompt + max_tokens), so every call on these prompts shares a program
    width = int(np.ceil((max(starts) + max_tokens) / 32) * 32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    n = len(rows)
    n_pad = int(np.ceil(n / batch_size) * batch_size)
    ids = np.full((n_pad, width), pad, np.int32)
    mask = np.zeros_like(ids)
    head = np.zeros((n_pad, max_tokens), np.int32)
    target = np.zeros((n_pad, max_tokens), np.int32)
    tmask = np.zeros((n_pad, max_tokens), np.float32)
    for i, (r, s, k) in enumerate(zip(rows, starts, n_cont)):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
        head[i, :k] = np.arange(s - 1, s - 1 + k)
        target[i, :k] = r[s:s + k]
        tmask[i, :k] = 1.0
    mask[n:, 0] = 1  # padding rows: one real token, nothing scored
    out = []
    for b in range(0, n_pad, batch_size):
        sl = slice(b, b + batch_size)
        out.append(np.asarray(_completion_logprob()(model.params, jnp.asarray(ids[sl]), jnp.asarray(mask[sl]),
                                                  jnp.asarray(head[sl]), jnp.asarray(target[sl]),
                                                  jnp.asarray(tmask[sl]), cfg=model.config, dtype=model.dtype)))
    lp = np.concatenate(out)[:n].astype(np.float64)
    lp[np.asarray(n_cont) == 0] = np.nan
    return lp
