"""One config dataclass for every supported decoder family.

A Hugging Face `config.json` (transformers v4 or v5 spelling) is mapped onto explicit
switches -- norm kind and offset, embedding scale, soft-caps, per-layer window and RoPE table,
partial rotary, learned positions, parallel residual, gated MLP, biases -- so a single decoder
implementation serves Llama, Mistral, Gemma 1/2/3, Qwen2/2.5, Qwen3, Phi-3, GPT-NeoX/Pythia and GPT-2.
Each family's differences from Llama are data in `FAMILIES`, not code paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from ..errors import UserError
from ..core.layers import LayerSpec, resolve_layers

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "gemma", "gemma2", "gemma3_text", "gemma3", "qwen2", "qwen3", "phi3",
                         "gpt_neox", "gpt2")

# Per-family switches (the DecoderConfig fields that differ from Llama's defaults, before the
# config.json's own values are applied). A new family is a new row here plus its weight names.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "gemma": dict(norm_offset=True, embed_scale=True),
    "gemma2": dict(norm_offset=True, embed_scale=True, post_norms=True),
    "gemma3": dict(norm_offset=True, embed_scale=True, post_norms=True, qk_norm=True),
    "qwen2": dict(attention_bias=True),  # q/k/v biases, none on o_proj
    "qwen3": dict(qk_norm=True),
    "phi3": {},  # fused qkv_proj / gate_up_proj are split at load time
    "gpt_neox": dict(norm="layer", parallel_residual=True, gated_mlp=False, mlp_bias=True, attention_bias=True,
                     o_bias=True),
    "gpt2": dict(norm="layer", positions="learned", gated_mlp=False, mlp_bias=True, attention_bias=True,
                 o_bias=True),
}

# What the tests check for each family (tests/test_parity_tiny.py, test_steer.py, test_loading.py,
# test_real_models.py, test_families.py); `python -m stf_jax.models families` prints it.
VERIFIED: dict[str, tuple[str, str]] = {  # family -> (models, what was verified)
    "llama": ("Llama 2/3, SmolLM2", "HF parity (tiny: GQA + untied + llama3 RoPE; tied + biases + head_dim); "
              "steering vs torch hook; KV-cache generation vs transformers.generate; GGUF F16/Q4_0/Q8_0 vs "
              "transformers; real smollm2-135m Q4_1 GGUF vs transformers"),
    "mistral": ("Mistral", "HF parity (tiny, 512 tokens past a 37-token sliding window); log-prob scorer"),
    "gemma": ("Gemma 1", "HF parity (tiny, MQA, head_dim 32)"),
    "gemma2": ("Gemma 2", "HF parity (tiny: soft-caps, alternating window); KV-cache generation; bf16 tolerance"),
    "gemma3": ("Gemma 3 (text)", "HF parity (tiny: 5:1 window pattern, two RoPE tables); steering; KV-cache "
               "generation; real gemma3-270m Q4_K_M GGUF vs transformers"),
    "qwen2": ("Qwen2, Qwen2.5", "HF parity (tiny: GQA, q/k/v biases, sliding window from max_window_layers); "
              "steering vs torch hook; KV-cache generation; llama.cpp-converted GGUF vs HF and transformers"),
    "qwen3": ("Qwen3", "HF parity (tiny: MQA, explicit head_dim 24, q/k RMSNorm); steering; KV-cache generation; "
              "llama.cpp-converted F16 GGUF vs HF"),
    "phi3": ("Phi-3 (4k; no longrope)", "HF parity (tiny: GQA, fused qkv/gate_up, partial rotary 0.5, sliding "
             "window); steering; KV-cache generation; llama.cpp-converted GGUF vs HF"),
    "gpt_neox": ("GPT-NeoX, Pythia", "HF parity (tiny: parallel residual + rotary 25%, and sequential + rotary "
                 "50% + tied); steering; KV-cache generation; llama.cpp-converted F16 GGUF vs HF"),
    "gpt2": ("GPT-2", "HF parity (tiny: learned positions, Conv1D, 3 heads); steering; KV-cache generation; "
             "llama.cpp-converted F16 GGUF vs HF and transformers"),
}

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
    is_decoder partial_rotary_factor original_max_position_embeddings layer_norm_eps layer_norm_epsilon
    rotary_pct rotary_emb_base use_parallel_residual hidden_dropout classifier_dropout resid_pdrop embd_pdrop
    attn_pdrop n_embd n_layer n_head n_inner n_positions n_ctx activation_function scale_attn_weights
    scale_attn_by_inverse_layer_idx reorder_and_upcast_attn add_cross_attention summary_type summary_use_proj
    summary_activation summary_proj_to_labels summary_first_dropout task_specific_params
    """.split()
)


class ConfigError(UserError, ValueError):
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


_ADDED_FIELDS = frozenset({"norm", "gated_mlp", "parallel_residual", "positions", "rotary_dim", "o_bias"})
# How attention is computed, not what: never part of the config hash (run manifests stay valid either way).
_IMPLEMENTATION_FIELDS = frozenset({"attention"})
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Everything the decoder needs, with per-family behaviour as explicit fields.

    Attributes:
      family: llama | mistral | gemma | gemma2 | gemma3 | qwen2 | qwen3 | phi3 | gpt_neox | gpt2.
      vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff: shapes.
      norm_eps: norm epsilon.
      norm: "rms" (RMSNorm, scale only) or "layer" (LayerNorm with scale and bias: GPT-NeoX, GPT-2).
      norm_offset: Gemma's RMSNorm multiplies by (1 + w) instead of w.
      embed_scale: multiply embeddings by sqrt(d_model) (Gemma), rounded to the activation dtype.
      tie_embeddings: the LM head reuses the embedding matrix.
      activation: "silu", "gelu_tanh" (tanh approximation) or "gelu" (exact erf).
      gated_mlp: down(act(gate(x)) * up(x)) (Llama, Gemma, Qwen, Phi-3) or down(act(up(x))) (GPT-NeoX, GPT-2).
      parallel_residual: h + attn(norm1(h)) + mlp(norm2(h)) (GPT-NeoX `use_parallel_residual`) instead of
        two sequential residual steps.
      positions: "rope" (rotary tables in `ropes`) or "learned" (a position-embedding table added to the
        token embeddings, GPT-2; `ropes` is then empty).
      rotary_dim: how many leading dims of each head RoPE rotates (partial rotary, GPT-NeoX/Phi); None = all.
      post_norms: extra RMSNorms after attention and MLP outputs (Gemma 2/3).
      qk_norm: RMSNorm on queries and keys per head (Gemma 3).
      attn_softcap, final_softcap: tanh soft-capping of attention / final logits (Gemma 2).
      query_scale: multiplier on q.k (head_dim**-0.5 or query_pre_attn_scalar**-0.5).
      layer_window: per layer, sliding-window length or 0 for global attention.
      layer_rope: per layer, index into `ropes`.
      ropes: the RoPE tables the layers choose from (Gemma 3: global and local).
      attention_bias: q/k/v projection biases (Qwen2, GPT-NeoX, GPT-2, some Llama variants).
      o_bias: attention output projection bias.
      mlp_bias: MLP projection biases.
      max_position_embeddings: context length.
      model_type: the HF model_type it came from.
      attention: "xla" (the einsum reference, any backend), "cudnn" (`jax.nn.dot_product_attention`'s cuDNN
        flash attention: GPU, bf16/f16, no soft-cap, head_dim <= 256) or "auto" (cudnn where it applies,
        else xla). An implementation choice: left out of the config hash.
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
    # Added with the GPT-NeoX / GPT-2 / Qwen / Phi-3 families; left out of `to_json` at their defaults so the
    # config hashes of existing run manifests do not change.
    norm: str = "rms"
    gated_mlp: bool = True
    parallel_residual: bool = False
    positions: str = "rope"
    rotary_dim: int | None = None
    o_bias: bool = False
    attention: str = "auto"

    def __post_init__(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if (f.name in _ADDED_FIELDS and d[f.name] == f.default) or f.name in _IMPLEMENTATION_FIELDS:
                del d[f.name]
        return json.dumps(d, sort_keys=True)

    @property
    def rope_dim(self) -> int:
        """Dims of each head that RoPE rotates (0 with learned positions)."""
        if self.positions != "rope":
            return 0
        return self.head_dim if self.rotary_dim is None else self.rotary_dim

    @property
    def config_hash(self) -> str:
        """Stable hash of everything that defines the computation (for run manifests)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def resolve_layers(self, layers: LayerSpec) -> tuple[int, ...]:
        """HF hidden-state indices (0 = embeddings, i = output of block i) for a layer spec (indices,
        negatives, relative depths, ranges, 'all': `stf_jax.core.layers`), in the order asked; () for ()."""
        if isinstance(layers, (tuple, list)) and not layers:
            return ()
        return resolve_layers(layers, self.n_layers, keep_order=True, flag=None)


_ROPE_TYPES = ("default", "linear", "llama3")


def _rope_spec(params: dict[str, Any] | None, default_theta: float, source: str = "config.json") -> RopeSpec:
    params = dict(params or {})
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    theta = float(params.get("rope_theta", default_theta))
    if rope_type not in _ROPE_TYPES:
        raise ConfigError(
            f"{source}: RoPE scaling {rope_type!r} is not supported (supported: {', '.join(_ROPE_TYPES)}); "
            "use a checkpoint of the model without long-context RoPE scaling (e.g. a 4k-context variant)"
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


def _llama_spelling(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """Rename GPT-2's and GPT-NeoX's (v4) config keys to the Llama spelling the mapper reads."""
    hf = dict(hf)
    if hf.get("model_type") == "gpt2":
        if hf.get("add_cross_attention"):
            raise ConfigError(f"{source}: GPT-2 with cross-attention (add_cross_attention) is an encoder-decoder "
                              "part, not a decoder-only model; use a plain GPT-2 checkpoint")
        if hf.get("scale_attn_by_inverse_layer_idx"):
            raise ConfigError(f"{source}: scale_attn_by_inverse_layer_idx is not supported; "
                              "use a GPT-2 checkpoint without it (the OpenAI GPT-2 models do not set it)")
        renames = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
                   "n_positions": "max_position_embeddings", "activation_function": "hidden_act",
                   "layer_norm_epsilon": "layer_norm_eps"}
        for old, new in renames.items():
            if old in hf and new not in hf:
                hf[new] = hf[old]
        if hf.get("intermediate_size") is None:
            hf["intermediate_size"] = hf.get("n_inner") or 4 * int(_require(hf, "hidden_size", source))
        hf.setdefault("tie_word_embeddings", True)
    if hf.get("model_type") == "gpt_neox":
        if "rotary_emb_base" in hf and "rope_theta" not in hf:
            hf["rope_theta"] = hf["rotary_emb_base"]
        if "rotary_pct" in hf and "partial_rotary_factor" not in hf:
            hf["partial_rotary_factor"] = hf["rotary_pct"]
        hf.setdefault("tie_word_embeddings", False)
        hf.setdefault("use_parallel_residual", True)
    return hf


def _layer_types(hf: dict[str, Any], family: str, n_layers: int, window: int, source: str) -> list[str]:
    """Per layer "full_attention" | "sliding_attention": the explicit list, else each family's default."""
    if hf.get("layer_types"):
        types = list(hf["layer_types"])
        if len(types) != n_layers:
            raise ConfigError(f"{source}: layer_types has {len(types)} entries for {n_layers} layers")
    elif family == "gemma2":
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    elif family == "gemma3":
        pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    elif family in ("mistral", "phi3") and window:
        types = ["sliding_attention"] * n_layers
    elif family in ("qwen2", "qwen3") and hf.get("use_sliding_window") and window:
        first = int(hf.get("max_window_layers", n_layers))  # Qwen: layers from max_window_layers on slide
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
    else:
        types = ["full_attention"] * n_layers
    for t in types:
        if t not in ("full_attention", "sliding_attention"):
            raise ConfigError(f"{source}: layer type {t!r} is not supported")
    return types


_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "gelu": "gelu"}


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
    hf = _llama_spelling(hf, source)
    family = "gemma3" if model_type.startswith("gemma3") else model_type
    gemma = family.startswith("gemma")
    d_model = int(_require(hf, "hidden_size", source))
    n_heads = int(_require(hf, "num_attention_heads", source))
    n_layers = int(_require(hf, "num_hidden_layers", source))
    head_dim = int(hf.get("head_dim") or d_model // n_heads)
    switches = _switches(hf, family)
    global_rope, local_rope, rotary_dim = _rope_tables(hf, head_dim, switches.get("positions") == "learned", source)
    types = _attention_types(hf, family, n_layers, source)
    layer_window = tuple(int(hf.get("sliding_window") or 0) if t == "sliding_attention" else 0 for t in types)
    if switches.get("positions") == "learned":
        ropes, layer_rope = (), (0,) * n_layers
    elif family == "gemma3":  # global layers use the first table, sliding ones the local table
        ropes, layer_rope = (global_rope, local_rope), tuple(int(t == "sliding_attention") for t in types)
    else:
        ropes, layer_rope = (global_rope,), (0,) * n_layers
    activation = _activation(hf, gemma, source)

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
        norm_eps=float(hf.get("layer_norm_eps", 1e-5)) if switches.get("norm") == "layer"
        else float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
        activation=activation,
        attn_softcap=hf.get("attn_logit_softcapping") if family == "gemma2" else None,
        final_softcap=hf.get("final_logit_softcapping") if family in ("gemma2", "gemma3") else None,
        query_scale=_query_scale(hf, family, head_dim),
        layer_window=layer_window,
        layer_rope=layer_rope,
        ropes=ropes,
        rotary_dim=None if (rotary_dim == head_dim or not ropes) else rotary_dim,
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        **switches,
    )


def _switches(hf: dict[str, Any], family: str) -> dict[str, Any]:
    """The family's switches, overridden where the checkpoint says something explicit."""
    switches = dict(FAMILIES[family])
    if "attention_bias" in hf and family != "qwen2":  # Qwen2 always has q/k/v biases and no key for it
        switches["attention_bias"] = switches["o_bias"] = bool(hf["attention_bias"])
    if "mlp_bias" in hf and family not in ("gpt_neox", "gpt2"):
        switches["mlp_bias"] = bool(hf["mlp_bias"])
    if family == "gpt_neox":
        switches["parallel_residual"] = bool(hf["use_parallel_residual"])
    return switches


def _rope_tables(hf: dict[str, Any], head_dim: int, learned_positions: bool,
                 source: str) -> tuple[RopeSpec, RopeSpec, int]:
    """(global RoPE, local RoPE, rotary dims per head) from transformers v5 `rope_parameters` (maybe keyed by
    layer type) or v4 rope_theta / rope_scaling / partial_rotary_factor."""
    default_theta = float(hf.get("rope_theta", 10000.0))
    rp = hf.get("rope_parameters")
    if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
        global_rope = _rope_spec(rp.get("full_attention"), default_theta, source)
        local_rope = _rope_spec(rp.get("sliding_attention"), float(hf.get("rope_local_base_freq", 10000.0)), source)
        rp = rp.get("full_attention") or {}
    else:
        global_rope = _rope_spec(rp if isinstance(rp, dict) else hf.get("rope_scaling"), default_theta, source)
        local_rope = RopeSpec(theta=float(hf.get("rope_local_base_freq", 10000.0)))
    partial = float((rp if isinstance(rp, dict) else {}).get("partial_rotary_factor",
                                                             hf.get("partial_rotary_factor", 1.0)))
    rotary_dim = int(head_dim * partial)  # as transformers computes it
    if not learned_positions and (rotary_dim <= 0 or rotary_dim % 2):
        raise ConfigError(f"{source}: partial rotary factor {partial} gives {rotary_dim} rotary dims of "
                          f"{head_dim}; it must be a positive even number")
    return global_rope, local_rope, rotary_dim


def _attention_types(hf: dict[str, Any], family: str, n_layers: int, source: str) -> list[str]:
    """`_layer_types`, checked: sliding layers need a window."""
    window = hf.get("sliding_window") or 0
    types = _layer_types(hf, family, n_layers, window, source)
    if "sliding_attention" in types and not window:
        raise ConfigError(f"{source}: sliding_attention layers need a positive 'sliding_window'")
    return types


def _activation(hf: dict[str, Any], gemma: bool, source: str) -> str:
    act = hf.get("hidden_activation") or hf.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    if gemma and act == "gelu":  # HF always ran Gemma with the tanh approximation
        act = "gelu_pytorch_tanh"
    if act not in _ACTIVATIONS:
        raise ConfigError(f"{source}: activation {act!r} is not supported ({', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[act]


def _query_scale(hf: dict[str, Any], family: str, head_dim: int) -> float:
    if family in ("gemma2", "gemma3"):
        return float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5
    if family == "gpt2" and hf.get("scale_attn_weights") is False:
        return 1.0
    return head_dim**-0.5


def unknown_keys(hf: dict[str, Any]) -> list[str]:
    """Config keys we neither use nor know to be harmless (logged by the loaders)."""
    return sorted(k for k in hf if k not in _KNOWN_KEYS)


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
