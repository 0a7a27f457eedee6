"""Loading: GGUF quant types and llama.cpp conventions vs transformers, the cache, and clear errors."""

import json
import shutil

import numpy as np
import pytest

import stf_jax
from stf_jax.models.config import ConfigError
from stf_jax.models.params import WeightError
from stf_jax.testing import max_rel_error, random_batch

D, F, H, KV, L, V = 64, 128, 4, 2, 3, 256


def permute_like_llama_cpp(w, n_head):
    """llama.cpp's convert_hf_to_gguf q/k permutation (split-half -> interleaved RoPE)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, arch="llama", qtypes=None, tied=False, extra_tensor=None):
    """A tiny llama-architecture GGUF with a byte-level tokenizer; weights in the given quant types."""
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter
    from gguf.quants import quantize

    from stf_jax.models.loading.gguf_tokenizer import _byte_alphabet

    rng = np.random.default_rng(0)
    qtypes = qtypes or {}
    w = GGUFWriter(str(path), arch)
    w.add_name("tiny test model")
    w.add_block_count(L)
    w.add_context_length(512)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D // H)
    tokens = list(_byte_alphabet().values())
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)

    def add(name, arr, kind):
        qtype = qtypes.get(kind, Q.F32)
        arr = arr.astype(np.float32)
        if qtype == Q.F32:
            w.add_tensor(name, arr)
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qtype), raw_dtype=qtype)

    add("token_embd.weight", rng.normal(0, 0.5, (V, D)), "embed")
    add("output_norm.weight", 1 + rng.normal(0, 0.1, D), "norm")
    if not tied:
        add("output.weight", rng.normal(0, 0.1, (V, D)), "matrix")
    for i in range(L):
        add(f"blk.{i}.attn_norm.weight", 1 + rng.normal(0, 0.1, D), "norm")
        add(f"blk.{i}.ffn_norm.weight", 1 + rng.normal(0, 0.1, D), "norm")
        add(f"blk.{i}.attn_q.weight", permute_like_llama_cpp(rng.normal(0, 0.2, (D, D)), H), "matrix")
        add(f"blk.{i}.attn_k.weight", permute_like_llama_cpp(rng.normal(0, 0.2, (KV * D // H, D)), KV), "matrix")
        add(f"blk.{i}.attn_v.weight", rng.normal(0, 0.2, (KV * D // H, D)), "matrix")
        add(f"blk.{i}.attn_output.weight", rng.normal(0, 0.2, (D, D)), "matrix")
        add(f"blk.{i}.ffn_gate.weight", rng.normal(0, 0.2, (F, D)), "matrix")
        add(f"blk.{i}.ffn_up.weight", rng.normal(0, 0.2, (F, D)), "matrix")
        add(f"blk.{i}.ffn_down.weight", rng.normal(0, 0.2, (D, F)), "down")
    if extra_tensor:
        name, arr, qtype = extra_tensor
        w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STF_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# Q4_1, Q5_0, Q4_K, Q6_K and Q8_0 are covered by the shipped models (test_real_models.py).
@pytest.mark.parametrize("matrix,tied", [("F16", False), ("Q4_0", True), ("Q8_0", False)])
def test_gguf_quant_types_and_llama_permutation_match_transformers(tmp_path, cache, matrix, tied):
    import torch
    from gguf import GGMLQuantizationType as Q
    from transformers import AutoModelForCausalLM

    qtypes = {"matrix": Q[matrix], "down": Q[matrix], "embed": Q.Q8_0}
    path = write_tiny_gguf(tmp_path / "tiny.gguf", qtypes=qtypes, tied=tied)
    ours = stf_jax.load_model(path)
    assert ours.config.tie_embeddings == tied
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf", dtype=torch.float32,
                                               attn_implementation="eager").eval()
    ids, mask = random_batch(np.random.default_rng(3), 2, 96, V, "left")
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = ref(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                  position_ids=torch.as_tensor(pos, dtype=torch.long), output_hidden_states=True)
    ref_states = np.stack([h.numpy() for h in out.hidden_states])
    states = np.asarray(ours.hidden_states(ids, mask, "all"))
    assert max(max_rel_error(states[i], ref_states[i], mask) for i in range(L + 1)) < 1e-4


def test_gguf_second_load_uses_cache(tmp_path, cache):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    stf_jax.load_model(path)
    converted = list((cache / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "tokenizer.json").exists()
    stamp = (converted[0] / "model.safetensors").stat().st_mtime_ns
    stf_jax.load_model(path)
    assert (converted[0] / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten


def test_unknown_gguf_architecture(tmp_path, cache):
    path = write_tiny_gguf(tmp_path / "falcon.gguf", arch="falcon")
    with pytest.raises(ConfigError, match=r"falcon\.gguf.*architecture 'falcon' is not supported.*llama"):
        stf_jax.load_model(path)


def test_unsupported_quantization_type(tmp_path, cache):
    from gguf import GGMLQuantizationType as Q

    raw = np.zeros((2, 292), np.uint8)  # two Q8_K blocks of 256 values, which gguf cannot dequantize
    path = write_tiny_gguf(tmp_path / "q8k.gguf", extra_tensor=("blk.0.attn_q.bias", raw, Q.Q8_K))
    with pytest.raises(WeightError, match=r"q8k\.gguf.*blk\.0\.attn_q\.bias.*Q8_K"):
        stf_jax.load_model(path)


def _copy_tiny(tiny_model_dir, tmp_path, name="llama_gqa_untied_rope3"):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir(name), dst)
    return dst


def test_missing_config_field(tiny_model_dir, tmp_path):
    d = _copy_tiny(tiny_model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json.*'hidden_size' is missing"):
        stf_jax.load_model(d)


def test_unsupported_model_type(tiny_model_dir, tmp_path):
    d = _copy_tiny(tiny_model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text()) | {"model_type": "falcon"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"'falcon' is not supported.*llama, mistral, gemma, gemma2"):
        stf_jax.load_model(d)


def test_truncated_safetensors_shard(tiny_model_dir, tmp_path):
    d = _copy_tiny(tiny_model_dir, tmp_path)
    shard = d / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightError, match=r"model\.safetensors: truncated safetensors file"):
        stf_jax.load_model(d)


def test_missing_sharded_checkpoint_file(tiny_model_dir, tmp_path):
    d = _copy_tiny(tiny_model_dir, tmp_path)
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightError, match=r"missing: model-00002-of-00002\.safetensors"):
        stf_jax.load_model(d)


def test_sharded_checkpoint_loads(tiny_model_dir, tmp_path):
    """A checkpoint split over two shards with an index loads to the same weights."""
    from safetensors.numpy import load_file, save_file

    d = _copy_tiny(tiny_model_dir, tmp_path)
    tensors = load_file(str(d / "model.safetensors"))
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(d / fname), metadata={"format": "pt"})
        weight_map |= {n: fname for n in part}
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded = stf_jax.load_model(d)
    single = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    np.testing.assert_array_equal(np.asarray(sharded.params["layers"]["mlp"]["down"]["kernel"]),
                                  np.asarray(single.params["layers"]["mlp"]["down"]["kernel"]))


def test_unknown_registry_name_lists_known_models():
    with pytest.raises(FileNotFoundError, match=r"'smollm3'.*known models:.*gemma3-270m.*smollm2-135m"):
        stf_jax.load_model("smollm3")


def test_layer_out_of_range_names_valid_range(tiny_model_dir):
    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    with pytest.raises(ValueError, match=r"valid indices are -5\.\.4"):
        model.resolve_layers([7])


def test_registry_configs_for_paper_models():
    from stf_jax.models.registry import registry_config

    gemma = registry_config("gemma-7b-it")
    assert (gemma.d_model, gemma.n_layers, gemma.head_dim, gemma.norm_offset) == (3072, 28, 256, True)
    mistral = registry_config("mistral-7b-instruct")
    assert set(mistral.layer_window) == {4096}
    g2 = registry_config("gemma-2-9b")
    assert g2.layer_window[:2] == (4096, 0) and g2.attn_softcap == 50.0
    assert registry_config("llama-3-8b-instruct").n_kv_heads == 8
