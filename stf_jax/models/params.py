"""Canonical weight names and their assembly into the decoder's stacked Flax parameter tree.

Loaders (safetensors, GGUF) produce a flat dict of numpy arrays in Hugging Face orientation
(`[out, in]` for projections) under canonical names:

    embed, final_norm, lm_head,
    layers.{i}.{attn_norm, post_attn_norm, mlp_norm, post_mlp_norm, q_norm, k_norm,
                q, k, v, o, gate, up, down, q_bias, k_bias, v_bias, o_bias,
                gate_bias, up_bias, down_bias}

`to_flax` checks every shape against the config, transposes kernels, stacks blocks along a
leading layer axis for `nn.scan`, and casts to the requested dtype.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from .config import DecoderConfig


class WeightError(ValueError):
    """Weights that do not match the model config (missing, unexpected or mis-shaped)."""


# HF block-module name -> canonical name. Llama's "post_attention_layernorm" is its pre-MLP norm;
# in Gemma 2/3 it is a real post-attention norm and "pre_feedforward_layernorm" is the pre-MLP norm.
_HF_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "self_attn.q_norm": "q_norm",
    "self_attn.k_norm": "k_norm",
    "mlp.gate_proj": "gate",
    "mlp.up_proj": "up",
    "mlp.down_proj": "down",
    "pre_feedforward_layernorm": "mlp_norm",
    "post_feedforward_layernorm": "post_mlp_norm",
}
_HF_PREFIXES = ("model.language_model.", "language_model.model.", "model.")


def hf_to_canonical(name: str, cfg: DecoderConfig) -> str | None:
    """Map a transformers state-dict key to a canonical name (None: not a text-decoder weight)."""
    if name in ("lm_head.weight", "language_model.lm_head.weight"):
        return "lm_head"
    for prefix in _HF_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    else:
        return None
    if name == "embed_tokens.weight":
        return "embed"
    if name == "norm.weight":
        return "final_norm"
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if not m:
        return None
    idx, module, kind = m.groups()
    if module == "post_attention_layernorm":
        canon = "post_attn_norm" if cfg.post_norms else "mlp_norm"
    else:
        canon = _HF_BLOCK.get(module)
        if canon is None:
            return None
    return f"layers.{idx}.{canon}" + ("_bias" if kind == "bias" else "")


def expected_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> HF-orientation shape, for every weight this config needs."""
    d, f, dh = cfg.d_model, cfg.d_ff, cfg.head_dim
    q_out, kv_out = cfg.n_heads * dh, cfg.n_kv_heads * dh
    block = {
        "attn_norm": (d,), "mlp_norm": (d,),
        "q": (q_out, d), "k": (kv_out, d), "v": (kv_out, d), "o": (d, q_out),
        "gate": (f, d), "up": (f, d), "down": (d, f),
    }
    if cfg.post_norms:
        block |= {"post_attn_norm": (d,), "post_mlp_norm": (d,)}
    if cfg.qk_norm:
        block |= {"q_norm": (dh,), "k_norm": (dh,)}
    if cfg.attention_bias:
        block |= {"q_bias": (q_out,), "k_bias": (kv_out,), "v_bias": (kv_out,), "o_bias": (d,)}
    if cfg.mlp_bias:
        block |= {"gate_bias": (f,), "up_bias": (f,), "down_bias": (d,)}
    shapes = {"embed": (cfg.vocab_size, d), "final_norm": (d,)}
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (cfg.vocab_size, d)
    for i in range(cfg.n_layers):
        shapes |= {f"layers.{i}.{k}": v for k, v in block.items()}
    return shapes


def check_weights(cfg: DecoderConfig, flat: dict[str, np.ndarray], source: str) -> None:
    expected = expected_shapes(cfg)
    missing = sorted(set(expected) - set(flat), key=_natural)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise WeightError(f"{source}: missing weights for this config: {shown}")
    for name, shape in expected.items():
        if tuple(flat[name].shape) != shape:
            raise WeightError(f"{source}: weight {name} has shape {tuple(flat[name].shape)}, config expects {shape}")


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# canonical block name -> path inside the Flax "layers" subtree, and whether it is a [out,in] kernel
_FLAX_PATH = {
    "attn_norm": (("attn_norm", "scale"), False),
    "post_attn_norm": (("post_attn_norm", "scale"), False),
    "mlp_norm": (("mlp_norm", "scale"), False),
    "post_mlp_norm": (("post_mlp_norm", "scale"), False),
    "q_norm": (("attn", "q_norm", "scale"), False),
    "k_norm": (("attn", "k_norm", "scale"), False),
    **{p: (("attn", p, "kernel"), True) for p in ("q", "k", "v", "o")},
    **{p + "_bias": (("attn", p, "bias"), False) for p in ("q", "k", "v", "o")},
    **{p: (("mlp", p, "kernel"), True) for p in ("gate", "up", "down")},
    **{p + "_bias": (("mlp", p, "bias"), False) for p in ("gate", "up", "down")},
}


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def to_flax(cfg: DecoderConfig, flat: dict[str, np.ndarray], dtype=jnp.float32, source: str = "weights",
            device_put=jax.device_put) -> dict:
    """Build the decoder's parameter tree from canonical HF-orientation numpy weights."""
    check_weights(cfg, flat, source)
    np_dtype = np.dtype(jnp.dtype(dtype))

    def put(x):
        return device_put(np.ascontiguousarray(x).astype(np_dtype, copy=False))

    params: dict = {"embed": {"embedding": put(flat["embed"])}, "final_norm": {"scale": put(flat["final_norm"])}}
    if not cfg.tie_embeddings:
        params["lm_head"] = {"kernel": put(np.asarray(flat["lm_head"]).T)}
    block_names = {n.split(".", 2)[2] for n in expected_shapes(cfg) if n.startswith("layers.0.")}
    layers: dict = {}
    for name in sorted(block_names):
        path, is_kernel = _FLAX_PATH[name]
        per_layer = [np.asarray(flat[f"layers.{i}.{name}"]) for i in range(cfg.n_layers)]
        stacked = np.stack([w.T if is_kernel else w for w in per_layer])
        _set(layers, path, put(stacked))
    params["layers"] = layers
    return params


_CANON_TO_HF_BLOCK = {v: k for k, v in _HF_BLOCK.items()} | {"post_attn_norm": "post_attention_layernorm"}


def canonical_to_hf(name: str, cfg: DecoderConfig) -> str:
    """Inverse of `hf_to_canonical` (used to write converted GGUF weights as a HF directory)."""
    top = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "lm_head": "lm_head.weight"}
    if name in top:
        return top[name]
    _, idx, canon = name.split(".", 2)
    kind = "weight"
    if canon.endswith("_bias"):
        canon, kind = canon[: -len("_bias")], "bias"
    module = "post_attention_layernorm" if canon == "mlp_norm" and not cfg.post_norms else _CANON_TO_HF_BLOCK[canon]
    return f"model.layers.{idx}.{module}.{kind}"
