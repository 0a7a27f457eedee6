"""Sparse autoencoders: the encoder against NumPy, training that recovers planted features, the quality
figures against their definitions (and transformers' loss), the CLI end to end with resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from stf_jax.sae.model import SAEConfig, SAEParams, decode, encode, fvu, init_params

REPO = Path(__file__).resolve().parents[1]


def _random_params(cfg: SAEConfig, seed: int = 0) -> SAEParams:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return SAEParams(W_enc=f(cfg.d_in, cfg.d_sae), b_enc=f(cfg.d_sae), W_dec=f(cfg.d_sae, cfg.d_in), b_dec=f(cfg.d_in))


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_encoder_equals_numpy(architecture):
    cfg = SAEConfig(d_in=24, d_sae=96, architecture=architecture, k=5)
    p = _random_params(cfg)
    x = np.random.default_rng(1).standard_normal((7, 24)).astype(np.float32) * 3 + 1
    pre = (x.astype(np.float64) - p.b_dec) @ p.W_enc + p.b_enc
    if architecture == "topk":
        ref = np.zeros_like(pre)
        top = np.argsort(-pre, axis=1)[:, :5]
        np.put_along_axis(ref, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    else:
        ref = np.maximum(pre, 0)
    got = np.asarray(encode(cfg, p, x))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(decode(p, got)), ref @ p.W_dec + p.b_dec, rtol=1e-4, atol=1e-3)
    if architecture == "topk":
        assert ((got > 0).sum(1) <= 5).all()


def test_training_recovers_planted_features():
    """Tokens made of 3 of 48 unit directions (positive weights, an offset, a large norm): a TopK SAE trained
    with fit_sae explains them (FVU < 0.05) and finds most directions (decoder row cosine > 0.9)."""
    from stf_jax.sae.train import TrainOptions, fit_sae

    rng = np.random.default_rng(0)
    d, n_feat = 32, 48
    feats = rng.standard_normal((n_feat, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    offset = rng.standard_normal(d) * 5

    def sample(n, r):
        idx = np.argsort(r.random((n, n_feat)), axis=1)[:, :3]
        w = np.zeros((n, n_feat))
        np.put_along_axis(w, idx, r.uniform(0.5, 2.0, (n, 3)), 1)
        return ((w @ feats + offset) * 40).astype(np.float32)

    def stream(start):
        r = np.random.default_rng(100 + start)
        while True:
            yield sample(512, r)

    cfg = SAEConfig(d_in=d, d_sae=128, k=3)
    opts = TrainOptions(tokens=512 * 600, batch=512, lr=3e-3, warmup_steps=20, dead_after=20_000, progress=False)
    fit = fit_sae(cfg, stream, opts)
    x = sample(4096, np.random.default_rng(7))
    x_hat = np.asarray(decode(fit.params, encode(cfg, fit.params, x)))
    assert fvu(x, x_hat) < 0.05, fvu(x, x_hat)
    dec = np.asarray(fit.params.W_dec, np.float64)
    cos = (feats @ dec.T) / np.linalg.norm(dec, axis=1)
    found = (cos.max(1) > 0.9).mean()
    assert found >= 0.8, found
    assert fit.steps == 600 and fit.history[-1]["l0"] <= 3


def test_quality_figures_on_a_real_forward(tiny_model_dir):
    """A lossless SAE (ReLU of [x, -x]) recovers all of the CE loss with FVU 0; the zero SAE none; the clean
    loss equals transformers' next-token cross-entropy on the same tokens."""
    import torch
    import transformers

    import stf_jax
    from stf_jax.sae.quality import sae_quality

    model_dir = tiny_model_dir("llama_gqa_untied_rope3")
    model = stf_jax.load_model(model_dir)
    d = model.config.d_model
    texts = ["The quick brown fox jumps over the lazy dog.", "A short one.",
             "Sparse autoencoders split a layer into many features, most of them silent."]
    eye = np.eye(d, dtype=np.float32)
    lossless = SAEParams(W_enc=np.concatenate([eye, -eye], 1), b_enc=np.zeros(2 * d, np.float32),
                         W_dec=np.concatenate([eye, -eye], 0), b_dec=np.zeros(d, np.float32))
    cfg = SAEConfig(d_in=d, d_sae=2 * d, architecture="standard")
    q = sae_quality(model, cfg, lossless, texts, layer=2)
    assert q["fvu"] < 1e-10 and abs(q["ce_sae"] - q["ce_clean"]) < 1e-5 and abs(q["ce_loss_recovered"] - 1) < 1e-3
    zero = SAEParams(*(np.zeros_like(a) for a in (lossless.W_enc, lossless.b_enc, lossless.W_dec, lossless.b_dec)))
    qz = sae_quality(model, cfg, zero, texts, layer=2)
    assert abs(qz["ce_loss_recovered"]) < 1e-6 and qz["l0"] == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    total, count = 0.0, 0
    for t in texts:
        ids = torch.tensor([model.tokenizer(t)["input_ids"]])
        with torch.no_grad():
            logits = hf(ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    assert abs(q["ce_clean"] - total / count) < 1e-4 * max(1.0, total / count)
    assert q["l0"] == pytest.approx(d, abs=d)  # every token: |x| on one side of each pair


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "stf_jax.sae", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_cli_trains_saves_and_resumes(tiny_model_dir, tmp_path):
    from stf_jax.sae.saelens import load_sae

    model_dir = tiny_model_dir("llama_gqa_untied_rope3")
    corpus = tmp_path / "corpus.txt"
    from stf_jax.data import load_pairs

    corpus.write_text("\n".join(p.positive for p in load_pairs("shipped")[:300]))
    args = ["train", "--model", model_dir, "--layer", "2", "--corpus", corpus, "--latents", "4x", "--k", "8",
            "--tokens", 12288, "--batch", 512, "--checkpoint-every", 10, "--no-progress", "--out", tmp_path / "o"]
    got = _cli(*args)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "CE loss recovered" in got.stdout and "FVU" in got.stdout
    cfg, params, meta = load_sae(tmp_path / "o" / "sae")
    assert (cfg.d_in, cfg.d_sae, cfg.k, cfg.layer) == (64, 256, 8, 2)
    summary = json.loads((tmp_path / "o" / "training.json").read_text())
    assert summary["steps"] == 24 and 0 <= summary["fvu"] < 1 and summary["l0"] <= 8
    assert meta["training"]["fvu"] == summary["fvu"]
    assert not (tmp_path / "o" / "activations.npy").exists()  # the cache goes when training ends
    import shutil

    shutil.rmtree(tmp_path / "o" / "checkpoints" / "24")  # as if stopped after step 20
    again = _cli(*args)
    assert again.returncode == 0 and "resuming from step 20 of 24" in again.stdout + again.stderr, again.stderr[-2000:]
    other = _cli(*[a if a != "8" else "4" for a in args])
    assert other.returncode == 2 and "another SAE or other options" in other.stderr
    summary = json.loads((tmp_path / "o" / "training.json").read_text())  # the resumed run's SAE
    ev = _cli("eval", "--model", model_dir, "--sae", tmp_path / "o" / "sae", "--corpus", corpus)
    assert ev.returncode == 0 and json.loads(ev.stdout)["fvu"] == pytest.approx(summary["fvu"], rel=1e-5)


def test_cli_bad_input_is_one_line(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("llama_gqa_untied_rope3")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    good = tmp_path / "c.txt"
    good.write_text("one text here\nanother text there\n" * 20)
    base = ["train", "--model", model_dir, "--corpus", good, "--tokens", 1024, "--batch", 256, "--no-progress"]
    cases = [
        (["train", "--model", model_dir, "--layer", "2", "--corpus", empty, "--out", tmp_path / "a"], "no usable text"),
        ([*base, "--layer", "9", "--out", tmp_path / "b"], "layer"),
        ([*base, "--layer", "0", "--out", tmp_path / "c"], "entering a block"),
        ([*base, "--layer", "2", "--latents", "0", "--out", tmp_path / "d"], "latents"),
        ([*base, "--layer", "2", "--latents=-3x", "--out", tmp_path / "d2"], "latents"),
        ([*base, "--layer", "2", "--latents", "16", "--k", "32", "--out", tmp_path / "e"], "32 is more than the 16 latents"),
    ]
    for args, message in cases:
        got = _cli(*args)
        assert got.returncode == 2, (args, got.stderr[-1500:])
        assert got.stderr.count("\n") == 1 and message in got.stderr, (args, got.stderr)
        assert not Path(args[args.index("--out") + 1]).exists()
    from stf_jax.sae.saelens import save_sae

    other = SAEConfig(d_in=48, d_sae=96, k=4, model="elsewhere", layer=2)
    save_sae(tmp_path / "wide", other, init_params(other, jax.random.key(0)))
    got = _cli("eval", "--model", model_dir, "--sae", tmp_path / "wide", "--corpus", good)
    assert got.returncode == 2 and "reads 48-wide states" in got.stderr and got.stderr.count("\n") == 1


def test_feature_view_and_latent_vector(tiny_model_dir, tmp_path):
    """The latents a vector loads on (its own decoder row first), their top tokens equal a brute-force
    scan of every token's code, and a latent saved as a vector file reads back as that direction."""
    import jax.numpy as jnp

    import stf_jax
    from stf_jax.core.vector import SteeringVector
    from stf_jax.models import decoder
    from stf_jax.sae.features import FeatureInputError, latent_vector, top_activations, vector_features

    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    cfg = SAEConfig(d_in=64, d_sae=128, k=6, layer=2, model=model.name)
    p = _random_params(cfg, seed=3)
    loads = vector_features(cfg, p, 3.0 * p.W_dec[7], top=4)
    assert loads[0]["latent"] == 7 and loads[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert abs(loads[1]["cosine"]) <= abs(loads[0]["cosine"]) and len(loads) == 4
    with pytest.raises(FeatureInputError, match="64-wide"):
        vector_features(cfg, p, np.ones(10))
    texts = ["alpha beta gamma delta", "one two three four five six", "the cat sat on the mat", "zz top"]
    got = top_activations(model, cfg, p, texts, [7, 11], layer=2, n=3)
    tok = model.tokenizer
    every = {7: [], 11: []}
    for t in texts:
        ids = tok(t)["input_ids"]
        h = decoder.hidden_states(model.params, jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32),
                                  cfg=model.config, layers=(2,), dtype=model.dtype)[0][0]
        codes = np.asarray(encode(cfg, p, h))
        for lat in every:
            every[lat] += [float(a) for a in codes[1:, lat] if a > 0]
    for lat in every:
        np.testing.assert_allclose([r["activation"] for r in got[lat]], sorted(every[lat], reverse=True)[:3],
                                   rtol=1e-4)
    path = latent_vector(cfg, p, 7).save(tmp_path / "l7.safetensors")
    back = SteeringVector.load(path)
    d = np.asarray(p.W_dec[7])
    np.testing.assert_allclose(back.directions[2], d / np.linalg.norm(d), rtol=1e-5, atol=1e-6)
    with pytest.raises(FeatureInputError, match="outside"):
        latent_vector(cfg, p, 128)


def test_report_shows_sae_quality_and_features(tmp_path):
    import stf_jax

    summary = {"model": "m", "layer": 3, "d_in": 8, "d_sae": 64, "architecture": "topk", "k": 4, "fvu": 0.0512,
               "l0": 4.0, "dead_fraction_heldout": 0.0, "ce_loss_recovered": 0.9581, "ce_clean": 4.2, "ce_sae": 4.6,
               "ce_zero": 14.1, "tokens_trained": 1000, "tokens_per_second": 2863.0, "history": [{"step": 1}]}
    (tmp_path / "sae" / "m_l3").mkdir(parents=True)
    (tmp_path / "sae" / "m_l3" / "training.json").write_text(json.dumps(summary))
    feats = {"vector": "formality.gguf", "sae": "sae/m_l3/sae", "layer": 3, "model": "m",
             "features": [{"latent": 7, "cosine": 0.31, "top_activations": [
                 {"activation": 2.5, "token": " Please", "before": "Dinner at six.", "after": " be on time"}]}]}
    (tmp_path / "sae" / "features" / "formality").mkdir(parents=True)
    (tmp_path / "sae" / "features" / "formality" / "features.json").write_text(json.dumps(feats))
    report_md, _ = stf_jax.report(tmp_path)
    text = open(report_md).read()
    assert "## Sparse autoencoders" in text
    assert "| m | 3 | 64 (8x) | topk | 4 | 0.051 | 4.0 | 0.0% | 0.958 (4.20 / 4.60 / 14.10) | 1,000 | 2,863 |" in text
    assert "### SAE features of formality.gguf (layer 3" in text and "| 7 | +0.310 | …Dinner at six.[ Please] be on" in text


def test_training_loss_and_gradients_equal_their_definition():
    """The training loss (MSE + AuxK only when a latent is dead, a lax.cond branch) and its gradients equal
    the loss written out directly, with and without dead latents."""
    import jax.numpy as jnp

    from stf_jax.sae.model import activate, losses, pre_activations

    cfg = SAEConfig(d_in=24, d_sae=96, k=5, aux_k=12)
    p = jax.tree.map(jnp.asarray, _random_params(cfg, seed=5))
    x = jnp.asarray(np.random.default_rng(2).standard_normal((16, 24)), jnp.float32) * 2

    def dense(p, dead):
        pre = pre_activations(p, x)
        err = x - decode(p, activate(cfg, pre))
        mse = jnp.mean(jnp.sum(err ** 2, -1))
        aux_acts = activate(dataclasses_replace(cfg, k=cfg.k_aux), jnp.where(dead, pre, -jnp.inf))
        aux = jnp.mean(jnp.sum((jax.lax.stop_gradient(err) - aux_acts @ p.W_dec) ** 2, -1))
        return mse + cfg.aux_coefficient * jnp.where(dead.any(), aux * jnp.minimum(dead.sum() / cfg.k_aux, 1), 0)

    for dead in (jnp.zeros(96, bool), jnp.arange(96) % 3 == 0):
        got, g_got = jax.value_and_grad(lambda p: losses(cfg, p, x, dead)[0])(p)
        ref, g_ref = jax.value_and_grad(dense)(p, dead)
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_package_names_resolve_without_deprecations():
    import warnings

    import stf_jax.extract
    import stf_jax.sae

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in stf_jax.sae.__all__:
            assert getattr(stf_jax.sae, name) is not None, name
        assert stf_jax.extract.ExtractOptions.__module__ == "stf_jax.extract.driver"
