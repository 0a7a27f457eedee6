"""Shared fixtures: tiny random Hugging Face checkpoints (one per family and attention variant)
saved with `save_pretrained`, and the two real shipped models."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
    """Create and save one tiny random model; norms are randomized so (1 + w) vs w matters."""
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Callable: family variant name -> directory of a saved tiny random HF model (built once)."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_tiny(name, tmp_path_factory.mktemp(name))
        return built[name]

    return get


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
        from stf_jax.extract.run import ExtractOptions, extract_pairs
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


@pytest.fixture(scope="session")
def shipped_maps(tmp_path_factory):
    return ShippedMaps(tmp_path_factory.mktemp("shipped_maps"))


# ------------------------------------------------------------------ transformers' own reading of a GGUF, cached

def transformers_from_gguf(gguf_path, kind: str = "model", **kwargs):
    """transformers' model (f32) or tokenizer read from a GGUF by transformers itself (its dequantization and
    name mapping: independent of stf_jax's converter), saved with `save_pretrained` under the stf_jax cache
    on first use so later sessions skip the slow dequantization (gemma3-270m: ~75 s). kwargs: from_pretrained
    options for the model (attn_implementation)."""
    import hashlib
    import os
    import shutil
    from pathlib import Path

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
