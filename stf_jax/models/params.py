"""Canonical weight names and their assembly into the decoder's stacked Flax parameter tree.

Loaders (safetensors, GGUF) produce a flat dict of numpy arrays in Hugging Face orientation
(`[out, in]` for projections) under canonical names:

    embed, pos_embed, final_norm, final_norm_bias, lm_head,
    layers.{i}.{attn_norm, post_attn_norm, mlp_norm, post_mlp_norm, q_norm, k_norm,
                q, k, v, o, gate, up, down, q_bias, k_bias, v_bias, o_bias,
                gate_bias, up_bias, down_bias, attn_norm_bias, mlp_norm_bias}

Fused HF tensors are first read under the names `layers.{i}.qkv`, `layers.{i}.gate_up` (and
`_bias`) and split by `split_fused`: GPT-NeoX interleaves q/k/v per head ([H, 3, Dh] rows), GPT-2
and Phi-3 (and every GGUF `attn_qkv`) concatenate them; GPT-2's Conv1D stores [in, out].

`to_flax` checks every shape against the config, transposes kernels, stacks blocks along a
leading layer axis for `nn.scan`, and casts to the requested dtype.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import UserError
from .config import DecoderConfig


class WeightError(UserError, ValueError):
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

# GPT-NeoX and GPT-2 name their modules differently; Phi-3 fuses two Llama modules.
_HF_BLOCK_BY_FAMILY = {
    "gpt_neox": {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
        "attention.query_key_value": "qkv", "attention.dense": "o",
        "mlp.dense_h_to_4h": "up", "mlp.dense_4h_to_h": "down",
    },
    "gpt2": {
        "ln_1": "attn_norm", "ln_2": "mlp_norm", "attn.c_attn": "qkv", "attn.c_proj": "o",
        "mlp.c_fc": "up", "mlp.c_proj": "down",
    },
    "phi3": _HF_BLOCK | {"self_attn.qkv_proj": "qkv", "mlp.gate_up_proj": "gate_up"},
}
_HF_TOP_BY_FAMILY = {  # (prefixes, {module: canonical}, block-list name)
    "gpt_neox": (("gpt_neox.",), {"embed_in.weight": "embed", "final_layer_norm.weight": "final_norm",
                                  "final_layer_norm.bias": "final_norm_bias"}, "layers"),
    "gpt2": (("transformer.", ""), {"wte.weight": "embed", "wpe.weight": "pos_embed", "ln_f.weight": "final_norm",
                                    "ln_f.bias": "final_norm_bias"}, "h"),
}
_CONV1D = ("qkv", "o", "up", "down")  # GPT-2 modules stored as Conv1D: weight [in, out]


def hf_to_canonical(name: str, cfg: DecoderConfig) -> str | None:
    """Map a transformers state-dict key to a canonical name (None: not a text-decoder weight)."""
    if name in ("lm_head.weight", "language_model.lm_head.weight", "embed_out.weight"):
        return "lm_head"
    if cfg.family in _HF_TOP_BY_FAMILY:
        prefixes, top, blocks = _HF_TOP_BY_FAMILY[cfg.family]
        for prefix in prefixes:
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if rest in top:
                    return top[rest]
                m = re.fullmatch(rf"{blocks}\.(\d+)\.(.+)\.(weight|bias)", rest)
                if m and m.group(2) in _HF_BLOCK_BY_FAMILY[cfg.family]:
                    idx, module, kind = m.groups()
                    return f"layers.{idx}.{_HF_BLOCK_BY_FAMILY[cfg.family][module]}" + ("_bias" if kind == "bias" else "")
        return None
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
        canon = _HF_BLOCK_BY_FAMILY.get(cfg.family, _HF_BLOCK).get(module)
        if canon is None:
            return None
    return f"layers.{idx}.{canon}" + ("_bias" if kind == "bias" else "")


def split_fused(cfg: DecoderConfig, flat: dict[str, np.ndarray], qkv_layout: str | None = None
                ) -> dict[str, np.ndarray]:
    """Split fused `qkv` / `gate_up` weights into q, k, v / gate, up (HF [out, in] orientation).

    qkv_layout: "per_head" (GPT-NeoX's HF checkpoints: rows [H, 3, Dh]) or "concat" ([q; k; v]:
    GPT-2, Phi-3, every GGUF); by default the family's HF layout. GPT-2's Conv1D [in, out] weights are
    transposed here when they come from HF (`transpose_conv1d`)."""
    layout = qkv_layout or ("per_head" if cfg.family == "gpt_neox" else "concat")
    dh = cfg.head_dim
    sizes = (cfg.n_heads * dh, cfg.n_kv_heads * dh, cfg.n_kv_heads * dh)
    out = {}
    for name, w in flat.items():
        if ".qkv" not in name and ".gate_up" not in name:
            out[name] = w
            continue
        prefix, part = name.rsplit(".", 1)
        kind, suffix = (part[:-5], "_bias") if part.endswith("_bias") else (part, "")
        w = np.asarray(w)
        if kind == "gate_up":
            gate, up = np.split(w, 2, axis=0)  # Phi-3: gate rows first (HF chunks gate, up)
            out[f"{prefix}.gate{suffix}"], out[f"{prefix}.up{suffix}"] = gate, up
            continue
        if w.shape[0] != sum(sizes):
            raise WeightError(f"{name}: fused q/k/v weight has {w.shape[0]} rows, config expects {sum(sizes)}")
        if layout == "per_head":  # [H, 3, Dh, ...] -> [3, H * Dh, ...]
            parts = w.reshape(cfg.n_heads, 3, dh, *w.shape[1:]).swapaxes(0, 1).reshape(3, cfg.n_heads * dh, *w.shape[1:])
        else:
            parts = np.split(w, np.cumsum(sizes)[:-1], axis=0)
        for p, arr in zip("qkv", parts):
            out[f"{prefix}.{p}{suffix}"] = arr
    return out


def fuse_for_hf(cfg: DecoderConfig, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of `split_fused` (+ GPT-2's Conv1D transpose): canonical weights -> the family's HF tensors'
    layout, still under canonical names (`qkv`, `gate_up`); used to write GGUF weights as a HF directory."""
    if cfg.family not in ("gpt_neox", "gpt2", "phi3"):
        return dict(flat)
    out = dict(flat)
    for i in range(cfg.n_layers):
        for suffix in ("", "_bias"):
            names = [f"layers.{i}.{p}{suffix}" for p in "qkv"]
            if all(n in out for n in names):
                parts = [out.pop(n) for n in names]
                if cfg.family == "gpt_neox":
                    fused = np.stack([p.reshape(cfg.n_heads, cfg.head_dim, *p.shape[1:]) for p in parts], axis=1)
                    fused = fused.reshape(-1, *parts[0].shape[1:])
                else:
                    fused = np.concatenate(parts, axis=0)
                out[f"layers.{i}.qkv{suffix}"] = fused
        if cfg.family == "phi3":
            out[f"layers.{i}.gate_up"] = np.concatenate([out.pop(f"layers.{i}.gate"), out.pop(f"layers.{i}.up")])
    if cfg.family == "gpt2":
        out = {n: (w.T if n.rsplit(".", 1)[-1] in _CONV1D else w) for n, w in out.items()}
    return out


def transpose_conv1d(cfg: DecoderConfig, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GPT-2's HF Conv1D weights are [in, out]; everything else here is [out, in]."""
    if cfg.family != "gpt2":
        return flat
    return {n: (np.asarray(w).T if n.rsplit(".", 1)[-1] in _CONV1D else w) for n, w in flat.items()}


def expected_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> HF-orientation shape, for every weight this config needs."""
    d, f, dh = cfg.d_model, cfg.d_ff, cfg.head_dim
    q_out, kv_out = cfg.n_heads * dh, cfg.n_kv_heads * dh
    block = {
        "attn_norm": (d,), "mlp_norm": (d,),
        "q": (q_out, d), "k": (kv_out, d), "v": (kv_out, d), "o": (d, q_out),
        "up": (f, d), "down": (d, f),
    }
    if cfg.gated_mlp:
        block["gate"] = (f, d)
    if cfg.norm == "layer":
        block |= {"attn_norm_bias": (d,), "mlp_norm_bias": (d,)}
    if cfg.post_norms:
        block |= {"post_attn_norm": (d,), "post_mlp_norm": (d,)}
    if cfg.qk_norm:
        block |= {"q_norm": (dh,), "k_norm": (dh,)}
    if cfg.attention_bias:
        block |= {"q_bias": (q_out,), "k_bias": (kv_out,), "v_bias": (kv_out,)}
    if cfg.o_bias:
        block["o_bias"] = (d,)
    if cfg.mlp_bias:
        block |= {"up_bias": (f,), "down_bias": (d,)} | ({"gate_bias": (f,)} if cfg.gated_mlp else {})
    shapes = {"embed": (cfg.vocab_size, d), "final_norm": (d,)}
    if cfg.norm == "layer":
        shapes["final_norm_bias"] = (d,)
    if cfg.positions == "learned":
        shapes["pos_embed"] = (cfg.max_position_embeddings, d)
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
    "attn_norm_bias": (("attn_norm", "bias"), False),
    "mlp_norm_bias": (("mlp_norm", "bias"), False),
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
    if cfg.norm == "layer":
        params["final_norm"]["bias"] = put(flat["final_norm_bias"])
    if cfg.positions == "learned":
        params["pos_embed"] = {"embedding": put(flat["pos_embed"])}
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
    """Inverse of `hf_to_canonical` (used to write converted GGUF weights as a HF directory; fused
    families first go through `fuse_for_hf`)."""
    if cfg.family in _HF_TOP_BY_FAMILY:
        prefixes, top, blocks = _HF_TOP_BY_FAMILY[cfg.family]
        if name == "lm_head":
            return "embed_out.weight" if cfg.family == "gpt_neox" else "lm_head.weight"
        inverse = {v: k for k, v in top.items()}
        if name in inverse:
            return prefixes[0] + inverse[name]
        _, idx, canon = name.split(".", 2)
        kind = "weight"
        if canon.endswith("_bias"):
            canon, kind = canon[: -len("_bias")], "bias"
        module = {v: k for k, v in _HF_BLOCK_BY_FAMILY[cfg.family].items()}[canon]
        return f"{prefixes[0]}{blocks}.{idx}.{module}.{kind}"
    top = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "lm_head": "lm_head.weight"}
    if name in top:
        return top[name]
    _, idx, canon = name.split(".", 2)
    kind = "weight"
    if canon.endswith("_bias"):
        canon, kind = canon[: -len("_bias")], "bias"
    if cfg.family == "phi3" and canon in ("qkv", "gate_up"):
        return f"model.layers.{idx}.{'self_attn.qkv_proj' if canon == 'qkv' else 'mlp.gate_up_proj'}.{kind}"
    module = "post_attention_layernorm" if canon == "mlp_norm" and not cfg.post_norms else _CANON_TO_HF_BLOCK[canon]
    return f"model.layers.{idx}.{module}.{kind}"
