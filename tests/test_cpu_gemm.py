"""bf16 dense layers through MKL on the CPU (`stf_jax.models.cpu_gemm`): the GEMM equals NumPy's f32 product of
the bf16-rounded inputs, the decoder routes every projection there only when asked (bf16, CPU, MKL found) and
its hidden states, with the residual stream kept in f32, are closer to f32 than XLA's all-bf16 forward. Skipped where MKL cannot be loaded
(`pip install "stf_jax[cpu-bf16]"`); the routing rules are tested everywhere."""

import ml_dtypes
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from stf_jax.models import cpu_gemm

needs_mkl = pytest.mark.skipif(cpu_gemm._gemm() is None, reason="MKL (libmkl_rt) not installed")


def test_routing_rules(monkeypatch):
    monkeypatch.setenv("STF_JAX_CPU_GEMM", "xla")
    assert not cpu_gemm.bf16_gemms(jnp.bfloat16)
    monkeypatch.setenv("STF_JAX_CPU_GEMM", "mkl")
    assert not cpu_gemm.bf16_gemms(jnp.float32)  # an f32 forward stays on XLA's dots: its outputs are unchanged
    assert cpu_gemm.bf16_gemms(jnp.bfloat16) == (cpu_gemm._gemm() is not None)
    monkeypatch.setenv("STF_JAX_CPU_GEMM", "auto")
    assert cpu_gemm.bf16_gemms(jnp.bfloat16) == (cpu_gemm._gemm() is not None and cpu_gemm.cpu_has_bf16())
    # other dense layers keep XLA's dot, on the CPU with its output stride padded where it aliases
    assert cpu_gemm.dense_dot_general(None) is cpu_gemm.dense_dot_general(jnp.float32) is cpu_gemm.stride_padded
    assert cpu_gemm.dense_dot_general(jnp.bfloat16) is cpu_gemm.dot_general


def test_stride_padded_pads_only_aliased_products_and_keeps_the_sums():
    """[rows, K] x [K, N]: the dot takes a widened weight exactly where N is a multiple of 1024 floats from
    2048 up and there are at least 512 rows; equal to the float64 product either way."""
    rng = np.random.default_rng(0)
    dims = (((2,), (0,)), ((), ()))
    for (b, s, k, n), padded in (((8, 128, 64, 2048), True), ((2, 256, 32, 3072), True), ((1, 8, 64, 2048), False),
                                 ((1, 511, 64, 2048), False), ((8, 128, 64, 1024), False), ((8, 128, 64, 2064), False)):
        x = rng.standard_normal((b, s, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        fn = lambda x, w: cpu_gemm.stride_padded(x, w, dims, precision=jax.lax.Precision.HIGHEST)
        dot, = [e for e in jax.make_jaxpr(fn)(x, w).jaxpr.eqns if e.primitive.name == "dot_general"]
        assert dot.invars[1].aval.shape == (k, n + 16 if padded else n), (b, s, k, n)
        got = np.asarray(jax.jit(fn)(x, w))
        assert got.shape == (b, s, n)
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-5, atol=1e-4)
    x, w = rng.standard_normal((4, 16)).astype(np.float32), rng.standard_normal((4, 2048)).astype(np.float32)
    got = cpu_gemm.stride_padded(x, w, (((0,), (0,)), ((), ())))  # not a dense layer's contraction: passed on
    np.testing.assert_allclose(np.asarray(got), x.T @ w, rtol=1e-5, atol=1e-4)


@needs_mkl
def test_mkl_gemm_equals_numpy_on_bf16_inputs():
    rng = np.random.default_rng(0)
    for m, k, n in ((1, 1, 1), (7, 33, 5), (130, 576, 192), (0, 8, 4)):
        a = rng.standard_normal((m, k)).astype(ml_dtypes.bfloat16)
        b = rng.standard_normal((k, n)).astype(ml_dtypes.bfloat16)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        got = cpu_gemm.host_gemm(a, b)
        assert got.dtype == np.float32 and got.shape == (m, n)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * np.sqrt(k))
    x = jnp.asarray(rng.standard_normal((2, 3, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)
    got = jax.jit(lambda x, w: cpu_gemm.dot_general(x, w, (((2,), (0,)), ((), ()))))(x, w)
    ref = jnp.einsum("bsk,kn->bsn", x.astype(jnp.float32), w.astype(jnp.float32)).astype(jnp.bfloat16)
    assert got.dtype == jnp.bfloat16 and got.shape == (2, 3, 8)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="handles"):
        cpu_gemm.dot_general(w, x, (((0,), (2,)), ((), ())))


@needs_mkl
def test_decoder_routes_every_projection_and_stays_close(tiny_model_dir, monkeypatch):
    import stf_jax
    from stf_jax.models import decoder

    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    cfg = model.config
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(3, cfg.vocab_size, (3, 12)))
    mask = jnp.ones((3, 12), jnp.int32)
    p16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), model.params)
    ref = np.asarray(decoder.hidden_states(model.params, ids, mask, cfg=cfg, layers=(cfg.n_layers - 1,)))

    calls = []
    real = cpu_gemm.host_gemm
    monkeypatch.setattr(cpu_gemm, "host_gemm", lambda a, b: calls.append(a.shape) or real(a, b))
    out = {}
    for route in ("xla", "mkl"):
        monkeypatch.setenv("STF_JAX_CPU_GEMM", route)
        jax.clear_caches()
        out[route] = np.asarray(decoder.hidden_states(p16, ids, mask, cfg=cfg, layers=(cfg.n_layers - 1,),
                                                      dtype=jnp.bfloat16), np.float32)
        assert len(calls) == (0 if route == "xla" else 7 * (cfg.n_layers - 1))  # q k v o gate up down per block
    scale = np.abs(ref).max()
    err = {r: np.abs(o - ref).max() / scale for r, o in out.items()}
    # the routed forward keeps the residual stream in f32 (only the projections multiply in bf16): closer to f32
    assert err["mkl"] < 1e-2 and err["mkl"] < err["xla"], err


@needs_mkl
def test_bf16_extraction_close_to_f32_and_f32_stays_the_cpu_default(tiny_model_dir, tmp_path, monkeypatch):
    """Extraction in bf16 through MKL's GEMM gives pair vectors close to f32 (here within cosine 0.999; over the
    1,000 shipped pairs of the benchmark the worst pair reaches 0.993, so f32 stays the CPU default either way)."""
    import stf_jax
    from stf_jax.extract import ExtractOptions, extract_pairs, load_layer
    from stf_jax.extract.driver import default_dtype
    from stf_jax.testing import shipped_pairs

    monkeypatch.setenv("STF_JAX_CPU_GEMM", "mkl")
    assert default_dtype() == "float32"
    jax.clear_caches()
    path = tiny_model_dir("llama_gqa_untied_rope3")
    pairs = shipped_pairs(per_trait=4, n_traits=4)
    vecs = {}
    for dtype in ("float32", "bfloat16"):
        model = stf_jax.load_model(path, dtype=dtype)
        out = tmp_path / dtype
        extract_pairs([model], pairs, out, ExtractOptions(layers="3", progress=False, dtype=dtype))
        vecs[dtype] = load_layer(out, model.name, 3)["vectors"]
    cos = (vecs["float32"] * vecs["bfloat16"]).sum(1)  # unit vectors
    assert cos.min() > 0.999, cos.min()
