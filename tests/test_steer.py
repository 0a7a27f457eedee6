"""Steered forward passes equal transformers (PyTorch) with a forward hook doing the same edit."""

import numpy as np
import pytest

import stf_jax
from stf_jax.testing import VOCAB, max_rel_error, random_batch
from stf_jax.steer import make_intervention, mean_logprobs, position_mask


def hooked_reference(model_dir, ids, mask, layers, vectors, alpha, mode, positions, scale=None):
    """transformers' forward with a hook on each steered decoder layer: the reference edit."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    pos_t = torch.as_tensor(positions, dtype=torch.float32)[..., None]

    def make_hook(v):
        v = torch.as_tensor(v, dtype=torch.float32)
        unit = v / v.norm()

        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            if mode == "additive":
                new = h + pos_t * alpha * unit * (scale if scale is not None else 1.0)
            elif mode == "replace":
                new = pos_t * v + (1 - pos_t) * h
            elif mode == "replace_norm":
                new = pos_t * h.norm(dim=-1, keepdim=True) * unit + (1 - pos_t) * h
            else:
                new = pos_t * ((1 - alpha) * h + alpha * v) + (1 - pos_t) * h
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    handles = [model.model.layers[layer - 1].register_forward_hook(make_hook(v)) for layer, v in zip(layers, vectors)]
    ids_t, mask_t = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=(mask_t.cumsum(-1) - 1).clamp(min=0),
                    output_hidden_states=True)
    for h in handles:
        h.remove()
    return np.stack([h.numpy() for h in out.hidden_states]), out.logits.numpy()


@pytest.mark.parametrize("mode,alpha", [("additive", 4.0), ("replace", 1.0), ("replace_norm", 1.0), ("blend", 0.3)])
@pytest.mark.parametrize("name", ["llama_gqa_untied_rope3", "gemma3_pattern"])
def test_steered_states_and_logits_match_pytorch_hook(name, mode, alpha, tiny_model_dir):
    model_dir = tiny_model_dir(name)
    model = stf_jax.load_model(model_dir)
    rng = np.random.default_rng(0)
    ids, mask = random_batch(rng, 3, 96, VOCAB, "left")
    layers = [2, model.config.n_layers - 1]
    vectors = rng.normal(size=(2, model.config.d_model)).astype(np.float32)
    positions = position_mask(mask, start=5)
    iv = make_intervention(model.config, layers, vectors, alpha, positions, mode=mode)
    logits, states = model.logits(ids, mask, iv, layers="all")
    ref_states, ref_logits = hooked_reference(model_dir, ids, mask, layers, vectors, alpha, mode, positions)
    errors = [max_rel_error(np.asarray(states)[i], ref_states[i], mask) for i in range(len(ref_states))]
    assert max(errors) <= 1e-4, errors
    assert max_rel_error(np.asarray(logits), ref_logits, mask) <= 1e-4
    # the edit really happened: steered states differ from the unsteered ones after the first layer
    plain = np.asarray(model.hidden_states(ids, mask, "all"))
    assert np.abs(plain[layers[0]] - np.asarray(states)[layers[0]]).max() > 1e-3


def test_alpha_zero_and_inactive_positions_are_bit_identical(tiny_model_dir):
    model = stf_jax.load_model(tiny_model_dir("gemma2_softcap"))
    ids, mask = random_batch(np.random.default_rng(1), 2, 64, VOCAB, "right")
    v = np.random.default_rng(2).normal(size=model.config.d_model)
    plain_logits, plain = model.logits(ids, mask, layers="all")
    for iv in (make_intervention(model.config, [3], v, 0.0, position_mask(mask)),
               make_intervention(model.config, [3], v, 8.0, np.zeros_like(mask, dtype=np.float32))):
        logits, states = model.logits(ids, mask, iv, layers="all")
        np.testing.assert_array_equal(np.asarray(states), np.asarray(plain))
        np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain_logits))


def test_mean_logprob_matches_pytorch(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_dir("mistral_window")
    model = stf_jax.load_model(model_dir)
    prompts = ["Describe the weather.", "Say hi."]
    conts = ["It is sunny and warm today.", "Hello there, friend!"]
    ours = mean_logprobs(model, prompts, conts)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = model.tokenizer
    for i, (p, c) in enumerate(zip(prompts, conts)):
        p_ids = tok(p)["input_ids"]
        c_ids = tok(" " + c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = ref_model(torch.tensor([p_ids + c_ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        ref = np.mean([logp[len(p_ids) + j - 1, t].item() for j, t in enumerate(c_ids)])
        assert abs(ours[i] - ref) < 1e-4


def test_bad_steering_requests():
    from stf_jax.models.registry import registry_config

    cfg = registry_config("gemma-2-2b")
    pos = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="not one of additive"):
        make_intervention(cfg, [3], np.ones(cfg.d_model), 1.0, pos, mode="multiply")
    with pytest.raises(ValueError, match="embeddings"):
        make_intervention(cfg, [0], np.ones(cfg.d_model), 1.0, pos)
    with pytest.raises(ValueError, match="does not fit"):
        make_intervention(cfg, [3], np.ones(7), 1.0, pos)
    with pytest.raises(ValueError, match="NaN"):
        make_intervention(cfg, [3], np.full(cfg.d_model, np.nan), 1.0, pos)


def _hf_generate(model_dir, ids, mask, n, hook_layer=None, vector=None, alpha=0.0):
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    handle = None
    if hook_layer is not None:
        unit = torch.as_tensor(vector / np.linalg.norm(vector), dtype=torch.float32)

        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            new = h + alpha * unit
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = ref.model.layers[hook_layer - 1].register_forward_hook(hook)
    with torch.no_grad():
        out = ref.generate(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                           max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    if handle:
        handle.remove()
    return out[:, ids.shape[1]:].numpy()


@pytest.mark.parametrize("name", ["llama_gqa_untied_rope3", "gemma3_pattern", "gemma2_softcap"])
def test_greedy_generation_with_kv_cache_matches_transformers(name, tiny_model_dir):
    import jax
    import jax.numpy as jnp

    from stf_jax.models.generate import generate_tokens

    model_dir = tiny_model_dir(name)
    model = stf_jax.load_model(model_dir)
    ids, mask = model.encode(["hello world, this is", "a much longer prompt that goes on and on for a while"],
                             padding_side="left")
    v = np.random.default_rng(3).normal(size=model.config.d_model).astype(np.float32)
    for layer, alpha in ((None, 0.0), (2, 6.0)):  # unsteered, then steered at every position
        iv = None if layer is None else make_intervention(model.config, [layer], v, alpha, position_mask(mask))
        tokens, _ = generate_tokens(model.params, jnp.asarray(ids), jnp.asarray(mask), iv, jnp.float32(1.0),
                                    jnp.asarray([-2]), jnp.float32(0.0), jnp.float32(1.0), jax.random.PRNGKey(0),
                                    cfg=model.config, dtype=model.dtype, max_new_tokens=48)
        ref = _hf_generate(model_dir, ids, mask, 48, layer, v, alpha)
        np.testing.assert_array_equal(np.asarray(tokens), ref)


def test_sampling_is_seeded_and_top_p_small_is_greedy(tiny_model_dir):
    from stf_jax.models.generate import generate

    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    prompts = ["once upon a time", "the answer is"]
    a = generate(model, prompts, 24, temperature=1.0, top_p=0.95, seed=7, stop_tokens=[])
    b = generate(model, prompts, 24, temperature=1.0, top_p=0.95, seed=7, stop_tokens=[])
    c = generate(model, prompts, 24, temperature=1.0, top_p=0.95, seed=8, stop_tokens=[])
    assert a == b and a != c
    greedy = generate(model, prompts, 24, stop_tokens=[])
    assert generate(model, prompts, 24, temperature=1.0, top_p=1e-6, seed=3, stop_tokens=[]) == greedy


def test_nucleus_sampling_draws_from_the_full_softmax_nucleus():
    """sample_token keeps the top-p nucleus of the *full* softmax (NumPy reference), though it only looks at
    the TOP_K most likely tokens, and draws each kept token about as often as its renormalised probability."""
    import jax
    import jax.numpy as jnp

    from stf_jax.models.generate import TOP_K, sample_token

    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(3.0, 1.0, 12), rng.normal(-8.0, 1.0, 5000)]).astype(np.float32)
    temperature, top_p = 0.8, 0.9
    p = np.exp(logits / temperature - np.max(logits / temperature))
    p /= p.sum()
    order = np.argsort(-p)
    kept = order[np.cumsum(p[order]) - p[order] < top_p]
    assert 1 < len(kept) < TOP_K
    draws = jax.vmap(lambda key: sample_token(jnp.asarray(logits)[None], key, jnp.float32(temperature),
                                              jnp.float32(top_p), sample=True)[0])(
        jax.random.split(jax.random.PRNGKey(1), 20000))
    counts = np.bincount(np.asarray(draws), minlength=len(logits))
    assert set(np.nonzero(counts)[0]) <= set(kept)
    expected = p[kept] / p[kept].sum()
    np.testing.assert_allclose(counts[kept] / counts.sum(), expected, atol=0.015)
    greedy = sample_token(jnp.asarray(logits)[None], jax.random.PRNGKey(0), jnp.float32(0.0), jnp.float32(top_p),
                          sample=True)
    assert int(greedy[0]) == int(np.argmax(logits))


def test_generation_stops_at_stop_token(tiny_model_dir):
    from stf_jax.models.generate import generate

    model = stf_jax.load_model(tiny_model_dir("mistral_window"))
    full = generate(model, ["abc"], 20, stop_tokens=[])[0]
    first = model.tokenizer(full, add_special_tokens=False)["input_ids"][3]
    stopped = generate(model, ["abc"], 20, stop_tokens=[first])[0]
    assert len(stopped) < len(full) and full.startswith(stopped)


def test_steer_generate_cli_prints_both_columns(tiny_model_dir, tmp_path, capsys):
    from stf_jax.steer.__main__ import main

    model_dir = tiny_model_dir("llama_gqa_untied_rope3")
    vec = tmp_path / "v.npy"
    np.save(vec, np.random.default_rng(0).normal(size=64).astype(np.float32))
    assert main(["generate", "--model", str(model_dir), "--vector", str(vec), "--layer", "2", "--alpha", "0.5",
                 "--max-new-tokens", "8", "hello there"]) == 0
    out = capsys.readouterr().out
    assert "unsteered" in out and "steered (additive, alpha 0.5, layers [2], stored" in out  # .npy: as stored
    n = stf_jax.load_model(model_dir).config.n_layers
    assert main(["generate", "--model", str(model_dir), "--vector", str(vec), "--layer", str(2 - (n + 1)), "--alpha", "0.5",
                 "--max-new-tokens", "8", "hello there"]) == 0
    assert capsys.readouterr().out == out  # -k is hidden state n + 1 - k, through the one layer parser
    with pytest.raises(ValueError, match="--layer"):
        main(["generate", "--model", str(model_dir), "--vector", str(vec), "--layer", "2,3", "hello"])
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(model_dir), "--vector", str(vec), "hello"])  # .npy needs --layer


def test_chat_template_without_one_is_a_clear_error(tiny_model_dir):
    from stf_jax.models.generate import generate

    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    assert getattr(model.tokenizer, "chat_template", None) is None
    with pytest.raises(ValueError, match="no chat template"):
        generate(model, ["hi"], max_new_tokens=2, chat_template=True)
