"""Read a GGUF file (llama.cpp's format) into a HF config dict and canonical numpy weights.

Dequantization is the `gguf` package's (`gguf.quants.dequantize`, every type llama.cpp writes).
What this module undoes are llama.cpp's conventions:
- llama-architecture q/k rows are permuted for llama.cpp's interleaved RoPE; HF uses split-half;
- Gemma norm weights are stored as (1 + w); HF stores w;
- a missing `output.weight` means tied embeddings;
- `attn_qkv` (GPT-NeoX, GPT-2, Phi-3) is [q; k; v] by rows -- the converter already undid GPT-NeoX's
  per-head interleaving and GPT-2's Conv1D orientation -- and Phi-3's `ffn_up` is its fused
  [gate; up]; both are split into the canonical q/k/v and gate/up here;
- facts llama.cpp does not store are the HF defaults of the family: GPT-NeoX's exact GELU and
  RoPE base 10000, GPT-2's tanh GELU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, config_from_hf
from ..params import WeightError, split_fused

SUPPORTED_ARCHITECTURES = ("llama", "gemma", "gemma2", "gemma3", "qwen2", "qwen3", "phi3", "gptneox", "gpt2")
_LAYER_NORM_ARCHS = ("gptneox", "gpt2")

_BLOCK_TENSORS = {
    "attn_norm": "attn_norm",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_output": "o",
    "attn_qkv": "qkv",
    "attn_q_norm": "q_norm",
    "attn_k_norm": "k_norm",
    "post_attention_norm": "post_attn_norm",
    "ffn_norm": "mlp_norm",
    "post_ffw_norm": "post_mlp_norm",
    "ffn_gate": "gate",
    "ffn_up": "up",
    "ffn_down": "down",
}


def _reader(path: Path):
    from gguf import GGUFReader

    from ...core.gguf_check import check_gguf

    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    check_gguf(path)  # bounded pre-scan: declared counts against the file's size, before any allocation
    try:
        return GGUFReader(str(path))
    except Exception as e:  # the gguf package raises ValueError/struct errors on damaged files
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def read_metadata(path: Path, reader=None) -> dict[str, Any]:
    """All key/values except the big tokenizer arrays, which are returned as Python lists too."""
    reader = reader or _reader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def hf_config_from_gguf(meta: dict[str, Any], tensor_names: set[str], path: Path) -> dict[str, Any]:
    """A transformers-style config dict for the model a GGUF file holds."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )

    def get(key, default=None, required=True):
        full = f"{arch}.{key}"
        if full not in meta:
            if required and default is None:
                raise ConfigError(f"{path}: GGUF metadata is missing {full!r}")
            return default
        return meta[full]

    n_heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    vocab = len(meta.get("tokenizer.ggml.tokens") or []) or int(get("vocab_size"))
    name = str(meta.get("general.name", "")).lower()
    model_type = {"gemma3": "gemma3_text", "gptneox": "gpt_neox"}.get(arch, arch)
    if arch == "llama" and "mistral" in name:
        model_type = "mistral"
    hf: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(get("attention.head_count_kv", n_heads)),
        "max_position_embeddings": int(get("context_length", 8192)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if arch in _LAYER_NORM_ARCHS:
        hf["layer_norm_eps"] = float(get("attention.layer_norm_epsilon"))
    else:
        hf["rms_norm_eps"] = float(get("attention.layer_norm_rms_epsilon"))
    rope_dims = get("rope.dimension_count", required=False)
    if arch in ("gptneox", "phi3"):  # partial rotary: rope.dimension_count is the rotated part of a head
        head_dim = int(get("attention.key_length", d_model // n_heads))
        hf["head_dim"] = head_dim
        if rope_dims:
            hf["partial_rotary_factor"] = int(rope_dims) / head_dim
    else:
        head_dim = get("attention.key_length", required=False) or rope_dims
        if head_dim:
            hf["head_dim"] = int(head_dim)
    if arch == "gptneox":
        hf["use_parallel_residual"] = bool(get("use_parallel_residual", True, required=False))
        hf["hidden_act"] = "gelu"  # HF GPT-NeoX / Pythia: exact GELU (llama.cpp does not record it)
        hf["attention_bias"] = "blk.0.attn_qkv.bias" in tensor_names
    if arch == "gpt2":
        hf["activation_function"] = "gelu_new"
    if arch in ("qwen3", "phi3"):
        hf["attention_bias"] = "blk.0.attn_q.bias" in tensor_names or "blk.0.attn_qkv.bias" in tensor_names
    if "rope_freqs.weight" in tensor_names:
        raise ConfigError(f"{path}: per-dimension RoPE frequency factors (rope_freqs) are not supported yet")
    if "rope_factors_long.weight" in tensor_names or "rope_factors_short.weight" in tensor_names:
        raise ConfigError(f"{path}: long-context RoPE scaling (longrope: rope_factors_long/short) is not supported; "
                          "use a GGUF of a 4k-context variant (e.g. Phi-3-mini-4k-instruct)")
    scaling_type = get("rope.scaling.type", required=False)
    if scaling_type and scaling_type != "none":
        hf["rope_scaling"] = {"rope_type": scaling_type, "factor": float(get("rope.scaling.factor", 1.0))}
    window = get("attention.sliding_window", required=False)
    if window:
        hf["sliding_window"] = int(window)
    if arch in ("gemma2", "gemma3"):
        hf["query_pre_attn_scalar"] = hf.get("head_dim", d_model // n_heads)
    if arch == "gemma2":
        hf["attn_logit_softcapping"] = float(get("attn_logit_softcapping", 50.0))
        hf["final_logit_softcapping"] = float(get("final_logit_softcapping", 30.0))
    if arch == "gemma3":
        hf["rope_local_base_freq"] = 10000.0  # llama.cpp hard-codes the local base too
        hf["sliding_window_pattern"] = 6
    return hf


def _canonical_name(name: str, arch: str = "llama") -> str:
    top = {"token_embd.weight": "embed", "output_norm.weight": "final_norm", "output_norm.bias": "final_norm_bias",
           "position_embd.weight": "pos_embed"}
    if name in top:
        return top[name]
    if name == "output.weight":
        return "lm_head"
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_TENSORS:
        suffix = "" if parts[3] == "weight" else "_bias"
        canon = "gate_up" if arch == "phi3" and parts[2] == "ffn_up" else _BLOCK_TENSORS[parts[2]]  # fused in Phi-3
        return f"layers.{parts[1]}.{canon}{suffix}"
    raise WeightError(f"unexpected tensor {name!r} (not part of a supported decoder)")


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved -> split-half RoPE)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path, progress: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(HF config dict, canonical f32 weights, metadata) for one GGUF file."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    path = Path(path)
    reader = _reader(path)
    meta = read_metadata(path, reader)
    names = {t.name for t in reader.tensors}
    hf = hf_config_from_gguf(meta, names, path)
    arch = meta["general.architecture"]
    n_heads, n_kv = hf["num_attention_heads"], hf["num_key_value_heads"]

    tensors = reader.tensors
    if progress:
        from tqdm.auto import tqdm

        tensors = tqdm(tensors, desc=f"dequantizing {path.name}", unit="tensor", leave=False)
    flat: dict[str, np.ndarray] = {}
    for t in tensors:
        try:
            canon = _canonical_name(t.name, arch)
        except WeightError as e:
            raise WeightError(f"{path}: {e}") from None
        try:
            qtype = GGMLQuantizationType(int(t.tensor_type))
            w = dequantize(t.data, qtype).astype(np.float32, copy=False)
        except (NotImplementedError, ValueError) as e:
            raise WeightError(
                f"{path}: tensor {t.name} uses quantization type {getattr(t.tensor_type, 'name', t.tensor_type)}, "
                f"which cannot be dequantized ({e})"
            ) from None
        if arch == "llama" and canon.endswith((".q", ".k")):
            w = _unpermute(w, n_heads if canon.endswith(".q") else n_kv)
        if arch.startswith("gemma") and t.name.endswith("norm.weight"):
            w = w - 1.0
        flat[canon] = w
    if any(".qkv" in n or ".gate_up" in n for n in flat):
        flat = split_fused(config_from_hf(hf, str(path)), flat, qkv_layout="concat")
    return hf, flat, meta
