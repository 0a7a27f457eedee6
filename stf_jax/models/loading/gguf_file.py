"""Read a GGUF file (llama.cpp's format) into a HF config dict and canonical numpy weights.

Dequantization is the `gguf` package's (`gguf.quants.dequantize`, every type llama.cpp writes).
What this module undoes are llama.cpp's conventions:
- llama-architecture q/k rows are permuted for llama.cpp's interleaved RoPE; HF uses split-half;
- Gemma norm weights are stored as (1 + w); HF stores w;
- a missing `output.weight` means tied embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..params import WeightError

SUPPORTED_ARCHITECTURES = ("llama", "gemma", "gemma2", "gemma3")

_BLOCK_TENSORS = {
    "attn_norm": "attn_norm",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_output": "o",
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

    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file not found")
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
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
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
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(get("context_length", 8192)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    head_dim = get("attention.key_length", required=False) or get("rope.dimension_count", required=False)
    if head_dim:
        hf["head_dim"] = int(head_dim)
    if "rope_freqs.weight" in tensor_names:
        raise ConfigError(f"{path}: per-dimension RoPE frequency factors (rope_freqs) are not supported yet")
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


def _canonical_name(name: str) -> str:
    if name == "token_embd.weight":
        return "embed"
    if name == "output_norm.weight":
        return "final_norm"
    if name == "output.weight":
        return "lm_head"
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_TENSORS:
        suffix = "" if parts[3] == "weight" else "_bias"
        return f"layers.{parts[1]}.{_BLOCK_TENSORS[parts[2]]}{suffix}"
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
            canon = _canonical_name(t.name)
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
    return hf, flat, meta
