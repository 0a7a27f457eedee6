"""One config dataclass for every supported decoder family.

A Hugging Face `config.json` (transformers v4 or v5 spelling) is mapped onto explicit
switches -- norm offset, embedding scale, soft-caps, per-layer window and RoPE table --
so a single decoder implementation serves Llama, Mistral and Gemma 1/2/3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "gemma", "gemma2", "gemma3_text", "gemma3")

# Keys of a HF config that we read, or that change nothing in a forward pass; any other key is
# reported, so a new feature of a checkpoint never goes silently unimplemented.
_KNOWN_KEYS = frozenset(
    """
    architectures output_hidden_states return_dict dtype torch_dtype chunk_size_feed_forward
    is_encoder_decoder id2label label2id problem_type initializer_range use_cache pad_token_id
    bos_token_id eos_token_id pretraining_tp attention_dropout _name_or_path transformers_version
    output_attentions use_bidirectional_attention _sliding_window_pattern sliding_window_pattern
    cache_implementation tokenizer_class max_window_layers use_sliding_window
    attn_implementation _attn_implementation_autoset quantization_config generation_config
    tie_word_embeddings vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads
    num_key_value_heads head_dim hidden_act hidden_activation max_position_embeddings rms_norm_eps
    rope_theta rope_scaling rope_parameters rope_local_base_freq attention_bias mlp_bias
    query_pre_attn_scalar sliding_window layer_types final_logit_softcapping attn_logit_softcapping
    model_type text_config vision_config mm_tokens_per_image boi_token_index eoi_token_index
    image_token_index initializer_factor vision_soft_tokens_per_image
    """.split()
)


class ConfigError(ValueError):
    """A config.json that stf_jax cannot turn into a decoder."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeSpec:
    """One RoPE table: base frequency plus optional HF `rope_scaling` (default/linear/llama3)."""

    theta: float
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Everything the decoder needs, with per-family behaviour as explicit fields.

    Attributes:
      family: llama | mistral | gemma | gemma2 | gemma3 (model_type family).
      vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff: shapes.
      norm_eps: RMSNorm epsilon.
      norm_offset: Gemma's RMSNorm multiplies by (1 + w) instead of w.
      embed_scale: multiply embeddings by sqrt(d_model) (Gemma), rounded to the activation dtype.
      tie_embeddings: the LM head reuses the embedding matrix.
      activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU).
      post_norms: extra RMSNorms after attention and MLP outputs (Gemma 2/3).
      qk_norm: RMSNorm on queries and keys per head (Gemma 3).
      attn_softcap, final_softcap: tanh soft-capping of attention / final logits (Gemma 2).
      query_scale: multiplier on q.k (head_dim**-0.5 or query_pre_attn_scalar**-0.5).
      layer_window: per layer, sliding-window length or 0 for global attention.
      layer_rope: per layer, index into `ropes`.
      ropes: the RoPE tables the layers choose from (Gemma 3: global and local).
      attention_bias, mlp_bias: projection biases (some Llama variants).
      max_position_embeddings: context length.
      model_type: the HF model_type it came from.
    """

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    norm_eps: float
    norm_offset: bool = False
    embed_scale: bool = False
    tie_embeddings: bool = False
    activation: str = "silu"
    post_norms: bool = False
    qk_norm: bool = False
    attn_softcap: float | None = None
    final_softcap: float | None = None
    query_scale: float = 1.0
    layer_window: tuple[int, ...] = ()
    layer_rope: tuple[int, ...] = ()
    ropes: tuple[RopeSpec, ...] = ()
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 8192
    model_type: str = "llama"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def config_hash(self) -> str:
        """Stable hash of everything that defines the computation (for run manifests)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def resolve_layers(self, layers) -> tuple[int, ...]:
        """HF hidden-state indices (0 = embeddings, i = output of block i, negatives from the end)."""
        n = self.n_layers + 1
        out = []
        for layer in layers:
            if not isinstance(layer, (int,)) or isinstance(layer, bool):
                raise ValueError(f"layer index must be an int, got {layer!r}")
            if not -n <= layer < n:
                raise ValueError(
                    f"layer {layer} is out of range for a model with {self.n_layers} blocks: "
                    f"valid hidden-state indices are {-n}..{n - 1} (0 = embeddings)"
                )
            out.append(layer % n)
        return tuple(out)


def _rope_spec(params: dict[str, Any] | None, default_theta: float) -> RopeSpec:
    params = dict(params or {})
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    theta = float(params.get("rope_theta", default_theta))
    if rope_type not in ("default", "linear", "llama3"):
        raise ConfigError(
            f"rope type {rope_type!r} is not supported (supported: default, linear, llama3)"
        )
    kw = {}
    for key in ("factor", "low_freq_factor", "high_freq_factor"):
        if key in params:
            kw[key] = float(params[key])
    if "original_max_position_embeddings" in params:
        kw["original_max_position_embeddings"] = int(params["original_max_position_embeddings"])
    return RopeSpec(theta=theta, rope_type=rope_type, **kw)


def _require(cfg: dict, key: str, source: str):
    if cfg.get(key) is None:
        raise ConfigError(f"{source}: required field {key!r} is missing from the model config")
    return cfg[key]


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> DecoderConfig:
    """Map a Hugging Face config dict onto a DecoderConfig (fails loudly on what it cannot map)."""
    model_type = hf.get("model_type")
    if model_type == "gemma3" and "text_config" in hf:
        text = dict(hf["text_config"])
        text.setdefault("model_type", "gemma3_text")
        return config_from_hf(text, source)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    family = "gemma3" if model_type.startswith("gemma3") else model_type
    gemma = family.startswith("gemma")
    d_model = int(_require(hf, "hidden_size", source))
    n_heads = int(_require(hf, "num_attention_heads", source))
    n_layers = int(_require(hf, "num_hidden_layers", source))
    head_dim = int(hf.get("head_dim") or d_model // n_heads)

    # RoPE: transformers v5 `rope_parameters` (maybe keyed by layer type) or v4 rope_theta/rope_scaling.
    default_theta = float(hf.get("rope_theta", 10000.0))
    rp = hf.get("rope_parameters")
    if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
        global_rope = _rope_spec(rp.get("full_attention"), default_theta)
        local_rope = _rope_spec(rp.get("sliding_attention"), float(hf.get("rope_local_base_freq", 10000.0)))
    else:
        global_rope = _rope_spec(rp if isinstance(rp, dict) else hf.get("rope_scaling"), default_theta)
        local_rope = RopeSpec(theta=float(hf.get("rope_local_base_freq", 10000.0)))

    # Layer types: explicit list, else each family's historical default.
    window = hf.get("sliding_window") or 0
    if hf.get("layer_types"):
        types = list(hf["layer_types"])
        if len(types) != n_layers:
            raise ConfigError(f"{source}: layer_types has {len(types)} entries for {n_layers} layers")
    elif family == "gemma2":
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    elif family == "gemma3":
        pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    elif family == "mistral" and window:
        types = ["sliding_attention"] * n_layers
    else:
        types = ["full_attention"] * n_layers
    for t in types:
        if t not in ("full_attention", "sliding_attention"):
            raise ConfigError(f"{source}: layer type {t!r} is not supported")
    if "sliding_attention" in types and not window:
        raise ConfigError(f"{source}: sliding_attention layers need a positive 'sliding_window'")
    layer_window = tuple(int(window) if t == "sliding_attention" else 0 for t in types)
    if family == "gemma3":
        ropes = (global_rope, local_rope)
        layer_rope = tuple(1 if t == "sliding_attention" else 0 for t in types)
    else:
        ropes = (global_rope,)
        layer_rope = (0,) * n_layers

    act = hf.get("hidden_activation") or hf.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    if gemma and act == "gelu":  # HF always ran Gemma with the tanh approximation
        act = "gelu_pytorch_tanh"
    activations = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
    if act not in activations:
        raise ConfigError(f"{source}: activation {act!r} is not supported ({', '.join(activations)})")

    if family in ("gemma2", "gemma3"):
        query_scale = float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5
    else:
        query_scale = head_dim**-0.5

    return DecoderConfig(
        family=family,
        model_type=model_type,
        vocab_size=int(_require(hf, "vocab_size", source)),
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        head_dim=head_dim,
        d_ff=int(_require(hf, "intermediate_size", source)),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_offset=gemma,
        embed_scale=gemma,
        tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
        activation=activations[act],
        post_norms=family in ("gemma2", "gemma3"),
        qk_norm=family == "gemma3",
        attn_softcap=hf.get("attn_logit_softcapping") if family == "gemma2" else None,
        final_softcap=hf.get("final_logit_softcapping") if family in ("gemma2", "gemma3") else None,
        query_scale=query_scale,
        layer_window=layer_window,
        layer_rope=layer_rope,
        ropes=ropes,
        attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
    )


def unknown_keys(hf: dict[str, Any]) -> list[str]:
    """Config keys we neither use nor know to be harmless (logged by the loaders)."""
    return sorted(k for k in hf if k not in _KNOWN_KEYS)


def read_hf_config(path: str | Path) -> DecoderConfig:
    path = Path(path)
    try:
        hf = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config.json here (a model directory needs one)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return config_from_hf(hf, str(path))


def rope_inv_freq(spec: RopeSpec, head_dim: int):
    """Inverse frequencies [head_dim // 2] (float32 numpy), computed as transformers does."""
    import numpy as np

    inv = 1.0 / (spec.theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    inv = inv.astype(np.float32)
    if spec.rope_type == "linear":
        inv = inv / spec.factor
    elif spec.rope_type == "llama3":
        old = spec.original_max_position_embeddings
        low_wavelen = old / spec.low_freq_factor
        high_wavelen = old / spec.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / spec.factor, inv)
        smooth = (old / wavelen - spec.low_freq_factor) / (spec.high_freq_factor - spec.low_freq_factor)
        smoothed = (1 - smooth) * scaled / spec.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv
