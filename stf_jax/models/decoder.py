"""One Flax decoder for Llama, Mistral, Gemma 1/2/3, Qwen2/2.5, Qwen3, Phi-3, GPT-NeoX/Pythia and GPT-2.

Conventions, stated once:
- Shapes: B batch, S sequence, D d_model, H query heads, K kv heads, G = H // K, Dh head_dim,
  L blocks, F d_ff, V vocab.
- Hidden-state indices follow Hugging Face: 0 = embeddings, i = output of block i, and index L is
  the final-normed output (exactly what `output_hidden_states=True` returns).
- HF conventions are kept inside the model (split-half RoPE, raw Gemma norm weights with 1 + w
  applied in f32, kernels = HF weights transposed) so activations equal what a PyTorch hook sees;
  file-format conventions (GGUF permutations, +1 norms) are undone at load time only.
- Per-layer differences (sliding window, RoPE table, steering intervention) are arrays scanned
  alongside the stacked block parameters, so Gemma 2/3 scan like Llama and changing a steering
  layer, vector or strength never recompiles.
- Per-family differences are `DecoderConfig` switches read here (norm kind, gated MLP, parallel
  residual, partial rotary, learned positions, biases); fused HF weights (GPT-NeoX
  `query_key_value`, GPT-2 `c_attn`, Phi-3 `qkv_proj` / `gate_up_proj`) are split at load time, so
  every family has the same q/k/v/o and gate/up/down parameters.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from . import cpu_gemm
from .config import DecoderConfig, rope_inv_freq

_NEG = -1e30  # large finite mask value: fully masked (padded) query rows stay NaN-free


@flax.struct.dataclass
class Intervention:
    """Edits of the residual stream after each block, as data (no recompiles).

    After block i, at positions where `positions` is nonzero:
        h <- h + keep[i] * h + add[i] * v_i + norm_match[i] * |h| * v_i / |v_i|
    Additive steering is add = alpha; replacement keep = -1, add = 1; norm-matched replacement
    keep = -1, norm_match = 1; blend keep = -alpha, add = alpha. All zeros leave h bit-identical.
    """

    vectors: jax.Array  # [L, D], or [L, B, 1, D]: one vector per row (serving, mixed batches)
    add: jax.Array  # [L]
    keep: jax.Array  # [L]
    norm_match: jax.Array  # [L]
    positions: jax.Array  # [B, S] 0/1

    @classmethod
    def per_row(cls, vectors, positions) -> "Intervention":
        """Additive steering with one vector per row and layer, added as given: vectors [L, B, 1, D] (zeros
        leave a row or layer bit-identical), at positions [B, S]."""
        ones, zeros = jnp.ones((vectors.shape[0],), jnp.float32), jnp.zeros((vectors.shape[0],), jnp.float32)
        return cls(jnp.asarray(vectors), ones, zeros, zeros, jnp.asarray(positions, jnp.float32))

    @classmethod
    def none(cls, n_layers: int, d_model: int, batch: int, seq: int) -> "Intervention":
        z = jnp.zeros((n_layers,), jnp.float32)
        return cls(jnp.zeros((n_layers, d_model), jnp.float32), z, z, z, jnp.zeros((batch, seq), jnp.float32))


def _rms_norm(x, scale, eps: float, offset: bool):
    """RMSNorm computed in f32; Gemma's (1 + w) or Llama's w, cast back like transformers does."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    if offset:
        return (xf * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
    return scale * xf.astype(x.dtype)


def _layer_norm(x, scale, bias, eps: float):
    """LayerNorm (mean and variance over the last axis) in f32, cast back (GPT-NeoX, GPT-2)."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    xf = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (xf * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm, or LayerNorm (with a bias) when kind == "layer"; the parameter names are the same."""

    eps: float
    offset: bool
    dtype: Any
    kind: str = "rms"

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.offset else nn.initializers.ones
        scale = self.param("scale", init, (x.shape[-1],), self.dtype)
        if self.kind == "layer":
            bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), self.dtype)
            return _layer_norm(x, scale, bias, self.eps)
        return _rms_norm(x, scale, self.eps, self.offset)


def take_positions(x, index):
    """x [B, S, ...] at index [B, P] -> [B, P, ...]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _rotate(x, cos, sin):
    """Split-half RoPE (HF `rotate_half`) on the first R dims of each head, the rest passed through
    (partial rotary, GPT-NeoX / Phi). x: [B, S, N, Dh]; cos, sin: [B, S, R], R <= Dh."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    out = x_rot * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return jnp.concatenate([out, x_pass], axis=-1) if r < x.shape[-1] else out


class Attention(nn.Module):
    cfg: DecoderConfig
    dtype: Any
    precision: Any
    append: bool = False  # decoding against a read-only cache: return this step's keys/values, not the cache
    gemm_dtype: Any = None  # the projections' input dtype when it differs from dtype (`cpu_gemm`)

    @nn.compact
    def __call__(self, x, layer, shared, query_index=None):
        """x: [B, S, D]; query_index [B, P] (optional): queries only at these positions, over every key
        (a forward that needs the last block's output only where it pools) -> [B, P, D]."""
        cfg = self.cfg
        b, s, _ = x.shape
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.dtype, precision=self.precision,
                        use_bias=cfg.attention_bias, dot_general=cpu_gemm.dense_dot_general(self.gemm_dtype))
        x_q = x if query_index is None else take_positions(x, query_index)
        s_q = x_q.shape[1]
        q = dense(cfg.n_heads * cfg.head_dim, name="q")(x_q).reshape(b, s_q, cfg.n_heads, cfg.head_dim)
        k = dense(cfg.n_kv_heads * cfg.head_dim, name="k")(x).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
        v = dense(cfg.n_kv_heads * cfg.head_dim, name="v")(x).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, cfg.norm_offset, self.dtype, name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, cfg.norm_offset, self.dtype, name="k_norm")(k)
        if cfg.ropes:  # (learned absolute positions were added to the embeddings instead)
            cos = shared["cos"][layer["rope"]].astype(x.dtype)  # [B, S, R]
            sin = shared["sin"][layer["rope"]].astype(x.dtype)
            at_q = (lambda t: t) if query_index is None else partial(take_positions, index=query_index)
            q, k = _rotate(q, at_q(cos), at_q(sin)), _rotate(k, cos, sin)
        cached = "cache_k" in layer
        window = layer["window"]
        allowed = shared["allowed"] & ((window == 0) | (shared["distance"] < window))  # [B, S, T]
        if query_index is not None:  # the reference path: cuDNN's is_causal assumes queries at every key
            allowed = take_positions(allowed, query_index)  # [B, P, T]
            out = _reference_attention(q, k, v, allowed, cfg, self.precision)
            return dense(cfg.d_model, use_bias=cfg.o_bias, name="o")(out.reshape(b, s_q, -1)), (k, v)
        if cached and self.append:
            out = _append_attention(q, k, v, layer["cache_k"], layer["cache_v"], allowed, window, cfg, self.precision)
            out = out.reshape(b, s, cfg.n_heads * cfg.head_dim)
            return dense(cfg.d_model, use_bias=cfg.o_bias, name="o")(out), (k, v)
        if cached:  # decoding: write this step's keys/values at cache_index, attend to all T
            at = (0, 0, shared["cache_index"], 0)  # the cache is [B, K, T, Dh]: see _reference_attention
            k = jax.lax.dynamic_update_slice(layer["cache_k"], k.swapaxes(1, 2).astype(layer["cache_k"].dtype), at)
            v = jax.lax.dynamic_update_slice(layer["cache_v"], v.swapaxes(1, 2).astype(layer["cache_v"].dtype), at)
        new_cache = (k, v)

        if attention_implementation(cfg, self.dtype, decoding=cached) == "cudnn":
            out = _flash_attention(q, k, v, allowed, cfg.query_scale)
        else:
            out = _reference_attention(q, k, v, allowed, cfg, self.precision, kv_heads_first=cached)
        out = out.reshape(b, s, cfg.n_heads * cfg.head_dim)
        return dense(cfg.d_model, use_bias=cfg.o_bias, name="o")(out), new_cache


def attention_implementation(cfg: DecoderConfig, dtype, decoding: bool = False) -> str:
    """"cudnn" (flash attention) or "xla" (einsum) for this forward, decided at trace time.

    "auto" takes cuDNN's fused kernel where it applies (GPU, bf16/f16, head_dim <= 256 and a multiple of 8,
    no soft-capping, not KV-cache decoding, whose one-token queries gain nothing from it); the einsum path
    is the reference everywhere else. An explicit "cudnn" where it cannot apply is an error, not a fallback."""
    if cfg.attention == "xla" or decoding:
        return "xla"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    reasons = [why for bad, why in (
        (jax.default_backend() != "gpu", f"backend is {jax.default_backend()}, not gpu"),
        (not half, f"dtype {jnp.dtype(dtype).name} (cuDNN flash attention needs bfloat16 or float16)"),
        (cfg.head_dim > 256 or cfg.head_dim % 8, f"head_dim {cfg.head_dim}"),
        (bool(cfg.attn_softcap), "attention soft-capping"),
    ) if bad]
    if cfg.attention == "cudnn" and reasons:
        raise ValueError(f"attention='cudnn' cannot run here: {'; '.join(reasons)}; use attention='auto' or 'xla'")
    return "xla" if reasons else "cudnn"


def _reference_attention(q, k, v, allowed, cfg: DecoderConfig, precision, kv_heads_first: bool = False):
    """Einsum attention with f32 scores (soft-capping, any dtype and backend). q: [B, S, H, Dh];
    k, v: [B, T, K, Dh], or [B, K, T, Dh] when kv_heads_first (the KV cache's layout: a decoding step's dots
    then read the cache as it lies, where [B, T, K, Dh] made XLA:CPU transpose all of it in every layer);
    allowed: [B, S, T] -> [B, S, H, Dh].

    Both dots are plain batched matmuls over (batch, kv head), the queries of a head group stacked head-major
    ([B, K, G*S, Dh]): the einsums over the token-major layout made XLA:CPU copy the scores and probabilities
    around each dot, a third of the attention's time in a packed extraction forward."""
    b, s = q.shape[:2]
    n_kv, g, dh = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim
    if not kv_heads_first:
        k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)  # [B, K, T, Dh]
    t = k.shape[2]
    q = q.reshape(b, s, n_kv, g, dh).transpose(0, 2, 3, 1, 4).reshape(b, n_kv, g * s, dh)
    scores = jnp.einsum("bkqd,bktd->bkqt", q, k, precision=precision, preferred_element_type=jnp.float32)
    probs = _attention_probs(scores.reshape(b, n_kv, g, s, t), allowed, cfg, q.dtype)  # [B, K, G, S, T]
    out = jnp.einsum("bkqt,bktd->bkqd", probs.reshape(b, n_kv, g * s, t), v, precision=precision)
    return out.reshape(b, n_kv, g, s, dh).transpose(0, 3, 1, 2, 4).reshape(b, s, cfg.n_heads, dh)


def _attention_probs(scores, allowed, cfg: DecoderConfig, dtype):
    """Scaled, soft-capped (Gemma 2) and masked f32 scores [B, K, G, S, T] -> probabilities in `dtype`;
    allowed: [B, S, T]."""
    scores = scores * cfg.query_scale
    if cfg.attn_softcap:
        scores = jnp.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
    scores = jnp.where(allowed[:, None, None], scores, _NEG)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


def _append_attention(q, k, v, cache_k, cache_v, allowed, window, cfg: DecoderConfig, precision):
    """Attention of S new tokens over a read-only cache plus themselves, without writing the cache: the
    serving engine writes the new keys/values into its slots afterwards with one small scatter, where
    rewriting [B, K, T, Dh] in every layer of every step cost more than the attention. q, k, v: [B, S, *, Dh]
    (this step's); cache_k, cache_v: [B, K, T, Dh], valid where `allowed` [B, S, T] says (the positions
    before each row's index, inside this layer's window)."""
    b, s = q.shape[:2]
    g = cfg.n_heads // cfg.n_kv_heads
    q = q.reshape(b, s, cfg.n_kv_heads, g, cfg.head_dim)
    old = jnp.einsum("bqkgd,bksd->bkgqs", q, cache_k, precision=precision, preferred_element_type=jnp.float32)
    new = jnp.einsum("bqkgd,bskd->bkgqs", q, k, precision=precision, preferred_element_type=jnp.float32)
    steps = jnp.arange(s)
    among_new = (steps[None, :] <= steps[:, None]) & ((window == 0) | (steps[:, None] - steps[None, :] < window))
    allowed = jnp.concatenate([allowed, jnp.broadcast_to(among_new, (b, s, s))], axis=-1)  # [B, S, T + S]
    probs = _attention_probs(jnp.concatenate([old, new], axis=-1), allowed, cfg, q.dtype)
    t = cache_k.shape[2]
    out = (jnp.einsum("bkgqs,bksd->bqkgd", probs[..., :t], cache_v, precision=precision)
           + jnp.einsum("bkgqs,bskd->bqkgd", probs[..., t:], v, precision=precision))
    return out.reshape(b, s, cfg.n_heads, cfg.head_dim)


def _flash_attention(q, k, v, allowed, scale: float, implementation: str = "cudnn"):
    """cuDNN fused attention. The mask [B, 1, S, T] (causal, key padding on either side, this layer's sliding
    window, traced per scanned layer) becomes cuDNN's additive bias, with the large negative value JAX
    chooses for cuDNN; is_causal lets the kernel skip the blocks above the diagonal, masked anyway."""
    return jax.nn.dot_product_attention(q, k, v, mask=allowed[:, None], scale=scale, is_causal=True,
                                        implementation=implementation)


_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu_tanh": partial(jax.nn.gelu, approximate=True),
    "gelu": partial(jax.nn.gelu, approximate=False),
}


class MLP(nn.Module):
    cfg: DecoderConfig
    dtype: Any
    precision: Any
    gemm_dtype: Any = None

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.dtype, precision=self.precision,
                        use_bias=cfg.mlp_bias, dot_general=cpu_gemm.dense_dot_general(self.gemm_dtype))
        act = _ACTIVATIONS[cfg.activation]
        if cfg.gated_mlp:  # down(act(gate(x)) * up(x))
            return dense(cfg.d_model, name="down")(act(dense(cfg.d_ff, name="gate")(x)) * dense(cfg.d_ff, name="up")(x))
        return dense(cfg.d_model, name="down")(act(dense(cfg.d_ff, name="up")(x)))  # GPT-NeoX, GPT-2


def apply_intervention(h, iv: dict, positions):
    """h: [B, S, D]; iv: this layer's slice of an Intervention; positions: [B, S]."""
    hf = h.astype(jnp.float32)
    v = iv["vectors"].astype(jnp.float32)
    v_unit = v / jnp.maximum(jnp.linalg.norm(v), 1e-12)
    h_norm = jnp.linalg.norm(hf, axis=-1, keepdims=True)
    delta = iv["keep"] * hf + iv["add"] * v + iv["norm_match"] * h_norm * v_unit
    return (hf + positions[..., None] * delta).astype(h.dtype)


class Block(nn.Module):
    """One pre-norm decoder block (+ Gemma 2/3 post-norms, or GPT-NeoX's parallel residual), then the
    steering intervention."""

    cfg: DecoderConfig
    dtype: Any
    precision: Any
    collect: Callable | None
    append: bool = False
    gemm_dtype: Any = None

    @nn.compact
    def __call__(self, h, layer, shared, query_index=None):
        """h: [B, S, D] -> (h', collected); with query_index [B, P], h' is the output at those positions only."""
        cfg = self.cfg
        norm = partial(RMSNorm, cfg.norm_eps, cfg.norm_offset, self.dtype, cfg.norm)
        x, cache = Attention(cfg, self.dtype, self.precision, self.append, self.gemm_dtype,
                             name="attn")(norm(name="attn_norm")(h), layer, shared, query_index)
        if query_index is not None:
            h = take_positions(h, query_index)
        if cfg.post_norms:
            x = norm(name="post_attn_norm")(x)
        mlp = MLP(cfg, self.dtype, self.precision, self.gemm_dtype, name="mlp")
        if cfg.parallel_residual:  # both branches read the block input (HF sums mlp + attn + h)
            h = mlp(norm(name="mlp_norm")(h)) + x + h
        else:
            h = h + x
            x = mlp(norm(name="mlp_norm")(h))
            if cfg.post_norms:
                x = norm(name="post_mlp_norm")(x)
            h = h + x
        if "iv" in layer:
            h = apply_intervention(h, layer["iv"], shared["iv_positions"])
        collected = self.collect(h, shared["mask"]) if self.collect else h
        return h, ((collected, cache) if "cache_k" in layer else collected)


@flax.struct.dataclass
class DecoderOutput:
    """What every forward returns, whatever its mode; a field the mode does not compute is None.

    embedded: collect(state entering the first run block) (the embeddings, or h0 when resuming).
    per_block: collect(output of each run block), stacked: [n_run - start, ...].
    last: collect(final-normed output), when the forward reaches the last block or computes logits.
    logits: [B, S | C | 1, V] f32, when the Decoder has logits=True.
    cache: {"k", "v": [L, B, K, T, Dh]} after this step, when decoding with a KV cache; with append_cache,
      this step's keys and values {"k", "v": [L, B, S, K, Dh]} (the caller writes them where they belong)."""

    embedded: Any
    per_block: Any
    last: Any
    logits: Any = None
    cache: Any = None


def _attention_inputs(segments, cache):
    """Token positions [B, S] and the attention geometry every block shares: allowed [B, S, T] (causal and
    key padding) and distance [S, T] (for sliding windows). With a KV cache, queries start at its index.

    segments [B, S] int: 0 for padding, k >= 1 for the k-th text packed into the row. A 0/1 attention mask is
    the one-text case. Each text attends only to itself, and its positions count from 0, so a packed row
    computes what separate padded rows compute; padding queries attend as before (to the real keys before
    them), so a 0/1 mask's forward is unchanged."""
    s = segments.shape[1]
    mask = segments > 0
    if cache is None:
        q_idx, k_idx, key_mask = jnp.arange(s)[:, None], jnp.arange(s)[None, :], mask
        same = (segments[:, :, None] == segments[:, None, :]) | ~mask[:, :, None]  # [B, S, S]
        allowed = (k_idx <= q_idx)[None] & key_mask[:, None, :] & same
        positions = jnp.maximum(allowed.sum(axis=-1, dtype=jnp.int32) - 1, 0)  # = cumsum(mask) - 1 for one text
    else:  # queries start at the cache index: one for every row, or one per row ([B] -> [B, S, T] geometry)
        positions = cache["positions"]
        index = jnp.asarray(cache["index"])
        q_idx = (index if index.ndim == 0 else index[:, None, None]) + jnp.arange(s)[:, None]
        k_idx = jnp.arange(cache["k"].shape[3])[None, :]
        key_mask = cache["key_mask"].astype(bool)
        causal = k_idx <= q_idx
        allowed = (causal if causal.ndim == 3 else causal[None]) & key_mask[:, None, :]
    shared = {"allowed": allowed, "distance": q_idx - k_idx, "mask": segments}
    if cache is not None:
        shared["cache_index"] = cache["index"]
    return positions, shared


def _rope_tables(cfg: DecoderConfig, positions) -> dict:
    """{"cos", "sin": [n_ropes, B, S, R]} for the RoPE tables the layers choose from ({} for learned positions)."""
    tables = []
    for spec in cfg.ropes:
        inv = jnp.asarray(rope_inv_freq(spec, cfg.rope_dim))
        freqs = positions[..., None].astype(jnp.float32) * inv  # [B, S, R/2]
        tables.append(jnp.concatenate([freqs, freqs], axis=-1))
    if not tables:
        return {}
    angles = jnp.stack(tables)
    return {"cos": jnp.cos(angles), "sin": jnp.sin(angles)}


def _layer_inputs(cfg: DecoderConfig, start: int, n_run: int, intervention, cache) -> dict:
    """What is scanned alongside blocks [start, n_run): window, RoPE choice, steering slices, KV cache."""
    per_layer = {
        "window": jnp.asarray(cfg.layer_window[start:n_run], jnp.int32),
        "rope": jnp.asarray(cfg.layer_rope[start:n_run], jnp.int32),
    }
    if intervention is not None:
        per_layer["iv"] = {name: getattr(intervention, name)[start:n_run]
                           for name in ("vectors", "add", "keep", "norm_match")}
    if cache is not None:
        per_layer["cache_k"], per_layer["cache_v"] = cache["k"][start:n_run], cache["v"][start:n_run]
    return per_layer


def _stack_offset(stacked, cfg: DecoderConfig, start: int, n_run: int) -> int:
    """Index in `stacked` of block `start`: `stacked` holds every block's parameters ([n_layers, ...]) or
    exactly the run's blocks ([n_run - start, ...])."""
    held = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    if held == cfg.n_layers:
        return start
    if held == n_run - start:
        return 0
    raise ValueError(f"the parameters hold {held} blocks; this forward runs blocks [{start}, {n_run}) of "
                     f"{cfg.n_layers}: give all of them or exactly those")


def _weights_at(stacked, index):
    """One block's parameters, read from the stack in place."""
    return jax.tree_util.tree_map(lambda w: jax.lax.dynamic_index_in_dim(w, index, keepdims=False), stacked)


def _scan_blocks(block: "Block", stacked, offset: int, h, per_layer, shared):
    """Scan `block` over the blocks per_layer describes ([n, ...] each), block i reading its weights from
    `stacked` at offset + i. -> (h, per-block outputs stacked)."""
    n = jax.tree_util.tree_leaves(per_layer)[0].shape[0]

    def step(h, xs):
        index, layer = xs
        return block.apply({"params": _weights_at(stacked, index)}, h, layer, shared)

    return jax.lax.scan(step, h, (jnp.arange(n) + offset, per_layer))


class Decoder(nn.Module):
    """Runs blocks [start, n_run) and returns a `DecoderOutput`.

    start > 0 resumes from `h0`, the residual stream entering block `start` (= hidden_states[start]):
    steering sweeps compute the shared prefix once and rerun only the blocks after the steered layer."""

    cfg: DecoderConfig
    dtype: Any = jnp.float32
    n_run: int | None = None
    collect: Callable | None = None
    logits: bool = False
    last_logits_only: bool = False  # generation: the LM head only at the final position
    start: int = 0
    append_cache: bool = False  # decoding: the cache is read only; DecoderOutput.cache holds this step's k/v
    # segments [B, S] -> positions [B, P]: where the collected output of the last run block is needed (an
    # extraction pooling the last token of each text). That block then computes only those queries, over every
    # key, and collects its f32 state there [B, P, D]; see `_blocks` for when it applies.
    final_positions: Callable | None = None

    @property
    def compute_dtype(self):
        """The dtype the forward computes in: `dtype`, except bf16 on a CPU whose bf16 GEMMs go to MKL
        (`cpu_gemm.bf16_gemms`): there the residual stream, norms and attention stay f32 and only the
        projections multiply in bf16 (bf16 weights and inputs, f32 accumulation), as CPU autocast does: pair
        vectors closer to f32 at the median than an all-bf16 forward (README, CPU table)."""
        return jnp.float32 if cpu_gemm.bf16_gemms(self.dtype) else self.dtype

    @property
    def gemm_dtype(self):
        return jnp.bfloat16 if cpu_gemm.bf16_gemms(self.dtype) else None

    @nn.compact
    def __call__(self, input_ids, attention_mask, intervention: Intervention | None = None, cache=None,
                 h0=None, head_index=None) -> DecoderOutput:
        """attention_mask [B, S]: 1 for real tokens, 0 for padding; or segment ids (k >= 1: the row's k-th
        packed text, each attending only to itself with positions from 0; `_attention_inputs`).
        cache (decoding): {"k", "v": [L, B, K, T, Dh], "index": write offset (scalar, or per row [B] with
        append_cache), "key_mask": [B, T], "positions": [B, S]}; the updated k/v come back in
        DecoderOutput.cache.
        h0: [B, S, D] state entering block `start` (required when start > 0).
        head_index: [B, C] positions whose logits are computed (the LM head only there)."""
        cfg = self.cfg
        n_run = cfg.n_layers if self.n_run is None else self.n_run
        if (self.start > 0) != (h0 is not None):
            raise ValueError("Decoder: give h0 exactly when start > 0")
        precision = jax.lax.Precision.HIGHEST if self.compute_dtype == jnp.float32 else None
        mask = attention_mask.astype(jnp.int32)  # segments: 0 padding, k >= 1 the row's k-th packed text
        positions, shared = _attention_inputs(mask, cache)
        shared |= _rope_tables(cfg, positions)
        if intervention is not None:
            shared["iv_positions"] = intervention.positions.astype(jnp.float32)
        per_layer = _layer_inputs(cfg, self.start, n_run, intervention, cache)

        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=self.compute_dtype, param_dtype=self.dtype, name="embed")
        h = self._embeddings(embed, input_ids, positions) if h0 is None else h0.astype(self.compute_dtype)
        collect = self.collect or (lambda x, m: x)
        embedded = collect(h, mask)
        h, per_block, new_cache = self._blocks(h, per_layer, shared, n_run, precision, cache is not None)

        final = RMSNorm(cfg.norm_eps, cfg.norm_offset, self.compute_dtype, cfg.norm, name="final_norm")
        normed = final(h) if (n_run == cfg.n_layers or self.logits) else None
        logits = self._head(embed, normed, head_index, precision) if self.logits else None
        last = collect(normed, mask) if normed is not None else None
        return DecoderOutput(embedded, per_block, last, logits, new_cache)

    def _embeddings(self, embed, input_ids, positions):
        """Token embeddings (x sqrt(d_model) for Gemma), plus learned absolute positions for GPT-2."""
        cfg = self.cfg
        h = embed(input_ids)
        if cfg.embed_scale:
            h = h * jnp.asarray(math.sqrt(cfg.d_model), self.compute_dtype)
        if cfg.positions == "learned":
            h = h + nn.Embed(cfg.max_position_embeddings, cfg.d_model, dtype=self.compute_dtype, param_dtype=self.dtype,
                             name="pos_embed")(positions)
        return h

    def _final_at_positions(self, n_run: int, per_layer, cached: bool) -> bool:
        """Whether the last run block of a forward (not initialization) computes only `final_positions`: set, a
        stopped forward (no final norm, no logits), no KV cache, no steering intervention."""
        return (self.final_positions is not None and n_run < self.cfg.n_layers and n_run > self.start
                and not self.logits and not cached and "iv" not in per_layer)

    def _blocks(self, h, per_layer, shared, n_run: int, precision, cached: bool):
        """Run the blocks [start, n_run) -> (h, per-block collected states, updated KV cache or None).

        Initialization builds the stacked parameters with `nn.scan`. A forward scans over layer indices and
        reads each block's weights from the stack in place (`_scan_blocks`), so a forward that stops early or
        resumes at `start` takes the full stack as it is: slicing it first copied the weights of every block
        it runs, each call (XLA:CPU: 10 % of a short-text extraction forward). With `final_positions`, the
        last block's queries, output projection and MLP run at those positions only: for an extraction
        pooling each text's last token, that block's matmuls shrink by the row length over the texts a row
        holds (gemma3-270m stopping at layer 13 of 18: 7 % of the forward's matmul FLOPs)."""
        if n_run <= self.start:
            return h, None, None
        block_args = (self.cfg, self.compute_dtype, precision, self.collect, self.append_cache, self.gemm_dtype)
        if self.is_initializing():
            stack = nn.scan(
                Block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast),
                length=n_run - self.start,
            )(*block_args, name="layers")
            h, per_block = stack(h, per_layer, shared)
        elif self._final_at_positions(n_run, per_layer, cached):
            return self._blocks_to_positions(h, per_layer, shared, n_run, block_args)
        else:
            stacked = self.variables["params"]["layers"]
            offset = _stack_offset(stacked, self.cfg, self.start, n_run)
            h, per_block = _scan_blocks(Block(*block_args), stacked, offset, h, per_layer, shared)
        if cached:
            per_block, new_cache = per_block
            return h, per_block, {"k": new_cache[0], "v": new_cache[1]}
        return h, per_block, None

    def _blocks_to_positions(self, h, per_layer, shared, n_run: int, block_args):
        """Blocks [start, n_run - 1) as a scan, then block n_run - 1 at `final_positions` only.
        -> (its state there [B, P, D], per-block collected states with it last, None)."""
        stacked = self.variables["params"]["layers"]
        offset = _stack_offset(stacked, self.cfg, self.start, n_run)
        n_scan = n_run - 1 - self.start
        head = jax.tree_util.tree_map(lambda x: x[:n_scan], per_layer)
        last = jax.tree_util.tree_map(lambda x: x[n_scan], per_layer)
        per_block = None
        if n_scan:
            h, per_block = _scan_blocks(Block(*block_args), stacked, offset, h, head, shared)
        final = Block(*block_args[:3], None, *block_args[4:])  # collects nothing: its output is the state
        index = self.final_positions(shared["mask"])  # [B, P]
        h, _ = final.apply({"params": _weights_at(stacked, offset + n_scan)}, h, last, shared, index)
        state = h.astype(jnp.float32)[None]
        return h, state if per_block is None else jnp.concatenate([per_block, state]), None

    def _head(self, embed, normed, head_index, precision):
        """f32 logits at the last position, at head_index [B, C], or everywhere; soft-capped for Gemma 2."""
        cfg = self.cfg
        head_in = normed[:, -1:] if self.last_logits_only else normed
        if head_index is not None:
            head_in = jnp.take_along_axis(normed, head_index[..., None], axis=1)  # [B, C, D]
        if cfg.tie_embeddings:
            # not embed.attend: that takes the default matmul precision, TF32 on GPUs (logits 3e-4 off)
            logits = jnp.einsum("bsd,vd->bsv", head_in, embed.embedding.astype(self.compute_dtype), precision=precision)
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=self.compute_dtype, param_dtype=self.dtype,
                              precision=precision, name="lm_head")(head_in)
        logits = logits.astype(jnp.float32)
        if cfg.final_softcap:
            logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
        return logits


def select_hidden_states(cfg: DecoderConfig, layers: tuple[int, ...], out: DecoderOutput):
    """Stack HF-indexed states of a full-depth or stopped forward (start 0): 0 -> embeddings, i -> block i
    output, L -> final-normed output."""
    return jnp.stack([out.embedded if i == 0 else out.last if i == cfg.n_layers else out.per_block[i - 1]
                      for i in layers])


def logits_from(params, h0, input_ids, attention_mask, *, cfg: DecoderConfig, start: int, dtype=jnp.float32,
                head_index=None):
    """Logits [B, S | C, V] of the blocks from `start` on, resumed from h0 [B, S, D] = hidden_states[start]: the
    blocks below run once elsewhere and are shared by every variant of h0 (steered, reconstructed, ablated).
    Callers jit it."""
    model = Decoder(cfg, dtype=dtype, logits=True, start=start)
    return model.apply({"params": params}, input_ids, attention_mask, None, h0=h0, head_index=head_index).logits


@partial(jax.jit, static_argnames=("cfg", "layers", "dtype", "collect", "final_positions"))
def hidden_states(params, input_ids, attention_mask, intervention=None, *, cfg: DecoderConfig,
                  layers: tuple[int, ...], dtype=jnp.float32, collect=None, final_positions=None):
    """[len(layers), B, S, D] (or collect()'s shape per layer); stops after the deepest layer.
    final_positions (with a collect that reads those positions, [B, P, D] f32): `Decoder.final_positions`."""
    n_run = max(layers)
    model = Decoder(cfg, dtype=dtype, n_run=n_run, collect=collect, final_positions=final_positions)
    out = model.apply({"params": params}, input_ids, attention_mask, intervention)
    return select_hidden_states(cfg, layers, out)


@partial(jax.jit, static_argnames=("cfg", "layers", "dtype"))
def logits_and_hidden_states(params, input_ids, attention_mask, intervention=None, *, cfg: DecoderConfig,
                             layers: tuple[int, ...] = (), dtype=jnp.float32):
    """Full forward: (logits [B, S, V] f32, hidden states [len(layers), B, S, D] or None)."""
    model = Decoder(cfg, dtype=dtype, n_run=cfg.n_layers, logits=True)
    out = model.apply({"params": params}, input_ids, attention_mask, intervention)
    states = select_hidden_states(cfg, layers, out) if layers else None
    return out.logits, states


def param_shapes(cfg: DecoderConfig, dtype=jnp.float32):
    """The parameter tree's shapes (for loaders and sharding), without allocating weights."""
    model = Decoder(cfg, dtype=dtype, logits=True)
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids)["params"])

