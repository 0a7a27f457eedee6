"""Tiny random models of every family, and small run directories, for tests and benchmarks.

The test suite (tests/conftest.py's fixtures), scripts/accelerator_check.py and scripts/protocol_snapshot.py
build the same checkpoints and runs; keeping the builders here lets each import them as code instead of
putting tests/ on sys.path.

  TINY, build_tiny          Llama/Mistral/Gemma/Gemma 2/Gemma 3 variants (every switch of the decoder)
  FAMILY_TINY,              GPT-NeoX, GPT-2, Qwen2, Qwen3, Phi-3 (weights rounded to f16 so an F16 GGUF
    build_family_tiny       of them is exact)
  random_batch, torch_reference, max_rel_error     parity against transformers' PyTorch forward
  transformers_from_gguf    transformers' own reading of a GGUF, cached
  ShippedMaps               the shipped models' map set (real models, fitted on the shipped pairs)
  shipped_pairs, write_run, make_planted_run       run directories in the extraction format

Importing this module needs only NumPy: torch, transformers and tokenizers are imported by the functions
that use them (they come with the `test` extra), so the package imports where they are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 300
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048)

# name -> (config class, model class, overrides): every switch of the decoder is exercised.
TINY = {
    "llama_gqa_untied_rope3": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "llama_tied_bias_headdim": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, head_dim=24, num_key_value_heads=4)),
    "mistral_window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=37, tie_word_embeddings=False)),
    "gemma_mqa": ("GemmaConfig", "GemmaForCausalLM", dict(num_key_value_heads=1, head_dim=32)),
    "gemma2_softcap": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        head_dim=32, sliding_window=37, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0)),
    "gemma3_pattern": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        num_hidden_layers=8, head_dim=32, sliding_window=37, query_pre_attn_scalar=24,
        rope_scaling={"rope_type": "linear", "factor": 8.0})),
}

# name -> (config class, model class, config kwargs): the other families, with awkward shapes (partial
# rotary, parallel residual, GQA/MQA, explicit head_dim, sliding window, biases, learned positions).
FAMILY_TINY = {
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        hidden_size=64, num_attention_heads=4, num_hidden_layers=3, intermediate_size=96,
        max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                       "partial_rotary_factor": 0.25},
        use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False)),
    "gpt_neox_sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(
        hidden_size=48, num_attention_heads=2, num_hidden_layers=2, intermediate_size=80,
        max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                                       "partial_rotary_factor": 0.5},
        use_parallel_residual=False, hidden_act="gelu_new", attention_bias=False, tie_word_embeddings=True)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=48, n_head=3, n_layer=3, n_positions=1024)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, intermediate_size=96,
        max_position_embeddings=1024, tie_word_embeddings=True, use_sliding_window=True, sliding_window=37,
        max_window_layers=1)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=24, num_hidden_layers=3,
        intermediate_size=96, max_position_embeddings=1024, tie_word_embeddings=False)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, intermediate_size=96,
        max_position_embeddings=1024, original_max_position_embeddings=1024, sliding_window=37,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)),
}
# llama.cpp's converter keeps no Qwen2 sliding window: its GGUF comes from this full-attention twin.
FAMILY_TINY["qwen2_full"] = (FAMILY_TINY["qwen2"][0], FAMILY_TINY["qwen2"][1],
                             FAMILY_TINY["qwen2"][2] | dict(use_sliding_window=False, sliding_window=None))


def _byte_tokenizer():
    """A 300-token byte-level BPE tokenizer so tiny checkpoints are complete HF directories."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from stf_jax.models.loading.gguf_tokenizer import _byte_alphabet

    vocab = {c: i for i, c in enumerate(_byte_alphabet().values())}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def build_tiny(name: str, out_dir):
    """Create and save one tiny random model of TINY; norms are randomized so (1 + w) vs w matters."""
    import torch
    import transformers

    cfg_cls, model_cls, overrides = TINY[name]
    config = getattr(transformers, cfg_cls)(**(COMMON | overrides))
    torch.manual_seed(sum(map(ord, name)))
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.normal_(0.0, 0.5)
            elif "bias" in pname:
                p.normal_(0.0, 0.1)
    model.save_pretrained(out_dir)
    _byte_tokenizer().save_pretrained(out_dir)
    return out_dir


def build_family_tiny(name: str, out_dir):
    """Save one tiny random checkpoint of FAMILY_TINY; weights are rounded to f16 so an F16 GGUF of it is exact."""
    import torch
    import transformers

    cfg_cls, model_cls, kwargs = FAMILY_TINY[name]
    config = getattr(transformers, cfg_cls)(vocab_size=VOCAB, **kwargs)
    torch.manual_seed(sum(map(ord, name)))
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1 and "bias" not in pname:  # norm scales
                p.normal_(1.0 if "ln" in pname or "layernorm" in pname or "layer_norm" in pname else 0.0, 0.5)
            elif "bias" in pname:
                p.normal_(0.0, 0.1)
            p.copy_(p.half().float())
    model.save_pretrained(out_dir)
    _byte_tokenizer().save_pretrained(out_dir)
    return out_dir


def random_batch(rng: np.random.Generator, batch: int, seq: int, vocab: int, padding: str):
    """Token ids plus a mask with ragged lengths on the given side."""
    ids = rng.integers(0, vocab, size=(batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    lengths = [seq] + list(rng.integers(seq // 3, seq, size=batch - 1))
    for b, n in enumerate(lengths):
        if padding == "left":
            mask[b, : seq - n] = 0
        else:
            mask[b, n:] = 0
    return ids, mask


def torch_reference(model_dir, ids, mask, dtype=None):
    """transformers' PyTorch forward (eager attention) -> (hidden states [L+1, B, S, D], logits)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=dtype or torch.float32)
    model.eval()
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    mask_t = torch.as_tensor(mask, dtype=torch.long)
    pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=pos, output_hidden_states=True)
    return np.stack([h.float().numpy() for h in out.hidden_states]), out.logits.float().numpy()


def max_rel_error(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """max |delta| / max |ref| over real (unpadded) positions."""
    valid = mask.astype(bool)
    return float(np.abs(ours[..., valid, :] - ref[..., valid, :]).max() / np.abs(ref[..., valid, :]).max())


# ------------------------------------------------------------------ the shipped models' map set (real clients)

MAP_TRAITS = ("formality", "verbosity", "politeness", "optimism", "hedging", "humor", "urgency", "empathy")
MAP_PAIRS_PER_TRAIT = 8  # each trait's first 8 shipped pairs fit the maps; later pairs stay held out


class ShippedMaps:
    """smollm2-135m -> gemma3-270m affine maps by relative depth (0.61, 0.667, 0.72: gemma3 layers 11-13,
    smollm2 layers 18-22), fitted on 8 pairs x 8 traits of the shipped set, with typical norms measured."""

    def __init__(self, root):
        from stf_jax.data import load_pairs
        from stf_jax.extract.driver import ExtractOptions, extract_pairs
        from stf_jax.transfer import fit_map

        self.run = root / "run"
        pairs = [p for t in MAP_TRAITS for p in load_pairs("shipped", traits=[t])[:MAP_PAIRS_PER_TRAIT]]
        extract_pairs(["smollm2-135m", "gemma3-270m"], pairs, self.run,
                      ExtractOptions(layers=("0.61", "0.667", "0.72"), progress=False), dataset_name="shipped")
        self.maps = fit_map(self.run, "smollm2-135m", "gemma3-270m", "affine", "depth", out=root / "maps",
                            norm_texts=32, log=lambda *a: None)
        self._models = {}

    def model(self, name: str):
        from stf_jax.models.loading import load_model

        if name not in self._models:
            self._models[name] = load_model(name)
        return self._models[name]


# ------------------------------------------------------------------ transformers' own reading of a GGUF, cached

def transformers_from_gguf(gguf_path, kind: str = "model", **kwargs):
    """transformers' model (f32) or tokenizer read from a GGUF by transformers itself (its dequantization and
    name mapping: independent of stf_jax's converter), saved with `save_pretrained` under the stf_jax cache
    on first use so later sessions skip the slow dequantization (gemma3-270m: ~75 s). kwargs: from_pretrained
    options for the model (attn_implementation)."""
    import hashlib
    import os
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stf_jax.locks import CacheLock
    from stf_jax.models.registry import cache_dir

    path = Path(gguf_path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}".encode()).hexdigest()[:12]
    saved = cache_dir() / "transformers_reference" / f"{path.stem}-{kind}-{key}"
    loader = AutoModelForCausalLM if kind == "model" else AutoTokenizer
    extra = {"dtype": torch.float32, **kwargs} if kind == "model" else {}
    with CacheLock(saved):
        if not (saved / "done").exists():
            obj = loader.from_pretrained(str(path.parent), gguf_file=path.name, **extra)
            if kind == "model":  # dequantized to f32 already; the GGUF marker only blocks save_pretrained
                obj.hf_quantizer = None
                obj.config.__dict__.pop("quantization_config", None)
            tmp = saved.with_name(saved.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            obj.save_pretrained(tmp)
            (tmp / "done").write_text(str(path))
            os.replace(tmp, saved)
    obj = loader.from_pretrained(str(saved), **extra)
    return obj.eval() if kind == "model" else obj


# ------------------------------------------------------------------ run directories (extraction format)

def shipped_pairs(per_trait: int = 24, n_traits: int = 8) -> list:
    """The first `per_trait` shipped pairs of each of the first `n_traits` traits, in dataset order."""
    from stf_jax.data import load_pairs

    pairs, seen = [], {}
    for p in load_pairs("shipped"):
        if len(seen) < n_traits or p.trait in seen:
            if seen.get(p.trait, 0) < per_trait:
                pairs.append(p)
                seen[p.trait] = seen.get(p.trait, 0) + 1
    return pairs


def write_run(root: Path, pairs, models: dict[str, list[np.ndarray]], kind="pairs") -> Path:
    """A run directory in the extraction format; models: name -> one [n, d] array per layer."""
    import json

    from safetensors.numpy import save_file

    from stf_jax.data import dataset_hash

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, layers in models.items():
        (root / name).mkdir(exist_ok=True)
        files = {}
        for i, x in enumerate(layers):
            files[str(i)] = f"{name}/layer_{i:03d}.safetensors"
            save_file({"vectors": np.ascontiguousarray(x, np.float32)}, str(root / files[str(i)]))
        entries.append({"name": name, "slug": name, "d_model": layers[0].shape[1], "n_layers": len(layers) - 1,
                        "layers": list(range(len(layers))), "files": files})
    manifest = {"format_version": 1, "kind": kind, "models": entries, "pair_ids": [p.id for p in pairs],
                "traits": [p.trait for p in pairs],
                "source": {"dataset": "shipped", "hash": dataset_hash(pairs), "n_pairs": len(pairs)}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_planted_run(root: Path, zero_vectors: bool = True):
    """Two models, 3 layers each; only source layer 1 and target layer 2 share instance-level structure.
    Returns (run directory, pairs).

    zero_vectors: a third of source layer 0's rows are zero (no direction), as at the embeddings."""
    from stf_jax.align.synthetic import planted_vectors

    pairs = shipped_pairs()
    names = sorted({p.trait for p in pairs})
    traits = np.array([names.index(p.trait) for p in pairs])
    a1, b2 = planted_vectors(traits, [24, 32], 20, noise=0.3, trait_strength=0.7, seed=1, normalize=True)
    a0, _ = planted_vectors(traits, [24, 32], 20, seed=2, normalize=True)
    _, b0 = planted_vectors(traits, [24, 32], 20, seed=3, normalize=True)
    a2, _ = planted_vectors(traits, [24, 32], 20, seed=4, normalize=True)
    if zero_vectors:
        a0[::3] = 0.0  # zero steering vectors (same last token at the embeddings): no direction, left out
    _, b1 = planted_vectors(traits, [24, 32], 20, seed=5, normalize=True)
    return write_run(root, pairs, {"A": [a0, a1, a2], "B": [b0, b1, b2]}), pairs
