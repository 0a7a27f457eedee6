"""Batched, jitted generation with a KV cache; steering applies during prefill and decoding.

Prompts are left-padded so every row's last prompt token sits in the last column. The cache holds
[L, B, K, S + max_new_tokens, Dh] keys and values; each decoding step writes one column and
attends over the valid ones. The whole loop is one `lax.scan` inside one jitted program.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core.chat import chat_text, has_chat_template
from .config import DecoderConfig
from .decoder import Decoder
from .model import Model


# Nucleus sampling draws from the TOP_K most likely tokens (transformers' default top_k is 50): sorting the
# whole vocabulary at every step cost more than the model's forward on CPU (262k tokens for Gemma 3).
TOP_K = 256


def sample_token(logits, key, temperature, top_p, *, sample: bool):
    """Next token from logits [B, V]: greedy unless `sample` (static) and temperature > 0; then temperature +
    nucleus (top-p) sampling among the TOP_K most likely tokens, with top-p measured on the full softmax."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if not sample:
        return greedy
    scaled = logits / jnp.maximum(temperature, 1e-6)
    top_scaled, top_ids = jax.lax.top_k(scaled, min(TOP_K, logits.shape[-1]))  # [B, K], descending
    top_probs = jnp.exp(top_scaled - jax.nn.logsumexp(scaled, axis=-1, keepdims=True))
    kept = jnp.cumsum(top_probs, axis=-1) - top_probs < top_p  # always keeps the top token
    choice = jax.random.categorical(key, jnp.where(kept, top_scaled, -jnp.inf), axis=-1)
    sampled = jnp.take_along_axis(top_ids, choice[:, None], axis=-1)[:, 0]
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@partial(jax.jit, static_argnames=("cfg", "dtype", "max_new_tokens", "sample"))
def generate_tokens(params, input_ids, attention_mask, intervention, steer_generated, stop_ids, temperature,
                    top_p, key, *, cfg: DecoderConfig, dtype, max_new_tokens: int, sample: bool = False):
    """-> tokens [B, max_new_tokens] int32 (pad after a stop token) and lengths [B]. Greedy unless `sample`."""
    b, s = input_ids.shape
    total = s + max_new_tokens
    model = Decoder(cfg, dtype=dtype, logits=True, last_logits_only=True)
    mask = attention_mask.astype(jnp.int32)
    n_real = mask.sum(-1)
    zeros = jnp.zeros((cfg.n_layers, b, cfg.n_kv_heads, total, cfg.head_dim), dtype)
    key_mask = jnp.concatenate([mask, jnp.zeros((b, max_new_tokens), jnp.int32)], axis=1)
    cache = {"k": zeros, "v": zeros, "index": 0, "key_mask": key_mask,
             "positions": jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)}
    apply = partial(model.apply, {"params": params})
    out = apply(input_ids, mask, intervention, cache)
    logits, k, v = out.logits, out.cache["k"], out.cache["v"]
    key, sub = jax.random.split(key)
    first = sample_token(logits[:, -1], sub, temperature, top_p, sample=sample)

    def step(carry, i):
        k, v, key_mask, token, done, key = carry
        index = s + i
        key_mask = key_mask.at[:, index].set(1)
        iv = None if intervention is None else intervention.replace(
            positions=jnp.full((b, 1), steer_generated, jnp.float32))
        step_cache = {"k": k, "v": v, "index": index, "key_mask": key_mask, "positions": (n_real + i)[:, None]}
        out = apply(token[:, None], jnp.ones((b, 1), jnp.int32), iv, step_cache)
        logits, k, v = out.logits, out.cache["k"], out.cache["v"]
        key, sub = jax.random.split(key)
        nxt = sample_token(logits[:, -1], sub, temperature, top_p, sample=sample)
        done = done | jnp.isin(token, stop_ids)
        return (k, v, key_mask, nxt, done, key), jnp.where(done, -1, nxt)

    done0 = jnp.zeros((b,), bool)
    _, rest = jax.lax.scan(step, (k, v, key_mask, first, done0, key), jnp.arange(max_new_tokens - 1))
    tokens = jnp.concatenate([first[:, None], rest.T], axis=1)  # [B, max_new]
    stopped = jnp.isin(tokens, stop_ids) | (tokens < 0)
    after_stop = jnp.cumsum(stopped, axis=1) - stopped > 0  # positions after the first stop token
    tokens = jnp.where(after_stop | (tokens < 0), -1, tokens)
    return tokens, (tokens >= 0).sum(-1)


def generate(model: Model, prompts: Sequence[str], max_new_tokens: int = 64, intervention_for=None,
             steer_prompt: bool = True, steer_generated: bool = True, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, stop_tokens: Sequence[int] | None = None,
             chat_template: bool = False) -> list[str]:
    """Completions for a batch of prompts; `intervention_for(prompt_mask)` builds the steering
    (its positions cover the prompt when steer_prompt, and every generated token when steer_generated)."""
    tok = model.tokenizer
    if chat_template and not has_chat_template(tok):
        raise ValueError("this model's tokenizer has no chat template (its GGUF/HF files carry none): generate "
                         "without chat_template=, or format the prompts yourself")
    texts = [chat_text(tok, p) for p in prompts] if chat_template else list(prompts)
    ids, mask = model.encode(texts, padding_side="left", add_special_tokens=not chat_template)
    iv = None
    if intervention_for is not None:
        iv = intervention_for(mask)
        if not steer_prompt:
            iv = iv.replace(positions=jnp.zeros_like(iv.positions))
    stops = list(stop_tokens) if stop_tokens is not None else [t for t in (tok.eos_token_id,) if t is not None]
    tokens, lengths = generate_tokens(
        model.params, jnp.asarray(ids), jnp.asarray(mask), iv, jnp.float32(steer_generated),
        jnp.asarray(stops or [-2], jnp.int32), jnp.float32(temperature), jnp.float32(top_p),
        jax.random.PRNGKey(seed), cfg=model.config, dtype=model.dtype, max_new_tokens=max_new_tokens,
        sample=temperature > 0)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [tok.decode(row[:n], skip_special_tokens=True) for row, n in zip(tokens, lengths)]
