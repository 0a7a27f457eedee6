"""Every hidden state of every layer equals transformers' PyTorch forward on tiny random models."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import stf_jax
from stf_jax.testing import TINY, VOCAB, max_rel_error, random_batch, torch_reference

SEQ = 512  # long: short prompts hide RoPE bugs, and it is well past the sliding window (37)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_hidden_states_and_logits_match_pytorch(name, padding, tiny_model_dir):
    model_dir = tiny_model_dir(name)
    ids, mask = random_batch(np.random.default_rng(0), 3, SEQ, VOCAB, padding)
    ref_states, ref_logits = torch_reference(model_dir, ids, mask)

    model = stf_jax.load_model(model_dir)
    states = np.asarray(model.hidden_states(ids, mask, "all"))
    assert states.shape == ref_states.shape
    errors = [max_rel_error(states[i], ref_states[i], mask) for i in range(len(states))]
    print(f"{name} {padding}: max rel error per layer {max(errors):.2e}")
    assert max(errors) <= 1e-4, errors

    logits, _ = model.logits(ids, mask)
    assert max_rel_error(np.asarray(logits), ref_logits, mask) <= 1e-4


@pytest.mark.parametrize("name", ["gemma3_pattern", "llama_gqa_untied_rope3"])
def test_partial_forward_equals_full(name, tiny_model_dir):
    """Stopping at the deepest requested layer gives the same states as the full pass."""
    model = stf_jax.load_model(tiny_model_dir(name))
    ids, mask = random_batch(np.random.default_rng(1), 2, 64, VOCAB, "left")
    full = np.asarray(model.hidden_states(ids, mask, "all"))
    n = model.config.n_layers
    part = np.asarray(model.hidden_states(ids, mask, [2, -3, 0]))
    np.testing.assert_array_equal(part[0], full[2])
    np.testing.assert_array_equal(part[1], full[n - 2])
    np.testing.assert_array_equal(part[2], full[0])


def test_gemma3_layer_pattern_and_rope_bases(tiny_model_dir):
    cfg = stf_jax.load_model(tiny_model_dir("gemma3_pattern")).config
    assert cfg.layer_window == (37, 37, 37, 37, 37, 0, 37, 37)
    assert cfg.layer_rope == (1, 1, 1, 1, 1, 0, 1, 1)
    assert cfg.ropes[0].rope_type == "linear" and cfg.ropes[1].theta == 10000.0


def test_bfloat16_params_within_stated_tolerance(tiny_model_dir):
    """bf16 parameters: every hidden state within 3% (relative to max |h|) of the f32 run."""
    model_dir = tiny_model_dir("gemma2_softcap")
    ids, mask = random_batch(np.random.default_rng(2), 2, 128, VOCAB, "left")
    f32 = np.asarray(stf_jax.load_model(model_dir).hidden_states(ids, mask, "all"))
    bf16_model = stf_jax.load_model(model_dir, dtype="bfloat16")
    assert bf16_model.params["layers"]["attn"]["q"]["kernel"].dtype == jnp.bfloat16
    bf16 = np.asarray(bf16_model.hidden_states(ids, mask, "all").astype(jnp.float32))
    errors = [max_rel_error(bf16[i], f32[i], mask) for i in range(len(f32))]
    print(f"bf16 vs f32 max rel error {max(errors):.3e}")
    assert max(errors) < 3e-2
    assert max(errors) > 0  # it really ran in bf16


@pytest.mark.parametrize("window", [0, 5])
def test_flash_attention_call_has_the_reference_semantics(window):
    """The cuDNN path's call (GQA layout, scale, causal + padding + sliding-window mask) computes the einsum
    reference's function: checked through the same jax.nn.dot_product_attention call with its XLA
    implementation, which runs anywhere; the accelerator check compares the cuDNN kernel itself on a GPU."""
    import jax

    from stf_jax.models.config import DecoderConfig
    from stf_jax.models.decoder import _flash_attention, _reference_attention, attention_implementation

    cfg = DecoderConfig(family="llama", vocab_size=10, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2,
                        head_dim=16, d_ff=8, norm_eps=1e-6, query_scale=0.3)
    rng = np.random.default_rng(3)
    b, s = 3, 24
    q = jnp.asarray(rng.standard_normal((b, s, 4, 16)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((b, s, 2, 16)), jnp.float32) for _ in range(2))
    mask = np.ones((b, s), bool)
    mask[1, :7] = False  # left padding
    mask[2, 15:] = False  # right padding
    idx = np.arange(s)
    allowed = (idx[None, :] <= idx[:, None])[None] & mask[:, None, :]
    if window:
        allowed &= (idx[:, None] - idx[None, :]) < window
    allowed = jnp.asarray(allowed)
    ref = _reference_attention(q, k, v, allowed, cfg, jax.lax.Precision.HIGHEST)
    out = _flash_attention(q, k, v, allowed, cfg.query_scale, implementation="xla")
    real = mask[:, :, None, None] & np.ones(ref.shape, bool)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=2e-5)
    assert attention_implementation(cfg, jnp.bfloat16) == "xla"  # CPU: the einsum reference
    with pytest.raises(ValueError, match="cannot run here"):
        attention_implementation(dataclasses.replace(cfg, attention="cudnn"), jnp.bfloat16)


def _dot_precisions(jaxpr):
    """Every dot_general's precision in a jaxpr, sub-jaxprs (scan bodies, pjit) included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append((eqn.params["precision"], str(eqn.invars[0].aval)))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    out += _dot_precisions(getattr(inner, "jaxpr", inner))
    return out


@pytest.mark.parametrize("name", ["gemma3_pattern", "llama_gqa_untied_rope3"])
def test_every_f32_matmul_asks_for_full_precision(name, tiny_model_dir):
    """On GPUs a default-precision f32 matmul runs in TF32 (~3e-4 relative error): the tied LM head once did,
    caught only by the accelerator check. On CPU the default is exact, so check the program instead."""
    import jax

    model = stf_jax.load_model(tiny_model_dir(name))
    ids, mask = random_batch(np.random.default_rng(0), 2, 16, VOCAB, "right")
    jaxpr = jax.make_jaxpr(lambda i, m: model.logits(i, m, layers="all"))(ids, mask)
    dots = _dot_precisions(jaxpr.jaxpr)
    assert len(dots) >= 7, dots  # q, k, v, o, MLP, two attention einsums, the LM head
    loose = [(p, a) for p, a in dots if p is None or any(x != jax.lax.Precision.HIGHEST for x in p)]
    assert not loose, loose
