"""stf_jax SAE directories against the real sae-lens (v6): ours load in sae-lens and encode the same, sae-lens'
own (TopK, Standard, with its encoder options) load in ours and encode the same, and damaged directories are
one-line SAEFileErrors, never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import sae_lens
import torch
from sae_lens.saes.sae import SAEMetadata

from stf_jax.sae.model import SAEConfig, SAEParams, decode, encode
from stf_jax.sae.saelens import SAEFileError, load_sae, save_sae

D_IN, D_SAE, K = 48, 192, 8
BIG = 1000.0  # the norm of a residual-stream mean, as in a late layer of a large model


def _assert_close(ours, theirs, rel=1e-5):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    scale = max(np.abs(theirs).max(), 1e-12)
    err = np.abs(ours - theirs).max()
    assert err <= rel * scale, f"max |diff| {err:.3g} > {rel} * {scale:.3g}"


def _offset(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=D_IN)
    return (v / np.linalg.norm(v) * BIG).astype(np.float32)


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Unit-scale activations, and ones around a mean of norm ~1000 (which b_dec must remove)."""
    rng = np.random.default_rng(seed)
    small = rng.normal(size=(64, D_IN)).astype(np.float32)
    big = (_offset(7) + 2.0 * rng.normal(size=(64, D_IN))).astype(np.float32)
    return {"small": small, "big": big}


def _random_arrays(seed: int, b_dec: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Random non-zero weights and biases; decoder rows of unequal norms; b_dec near the big inputs' mean."""
    rng = np.random.default_rng(seed)
    w_dec = rng.normal(size=(D_SAE, D_IN)) * rng.uniform(0.5, 2.0, size=(D_SAE, 1)) / np.sqrt(D_IN)
    out = {"W_enc": w_dec.T + 0.1 * rng.normal(size=(D_IN, D_SAE)) / np.sqrt(D_IN),
           "b_enc": 0.1 * rng.normal(size=D_SAE), "W_dec": w_dec,
           "b_dec": _offset(7) + rng.normal(size=D_IN) if b_dec is None else b_dec}
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _params(arrays: dict[str, np.ndarray]) -> SAEParams:
    return SAEParams(**{k: jnp.asarray(v) for k, v in arrays.items()})


def _ours(cfg: SAEConfig, params: SAEParams, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    acts = encode(cfg, params, jnp.asarray(x))
    return np.asarray(acts), np.asarray(decode(params, acts))


def _theirs(sae, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        acts = sae.encode(torch.from_numpy(x).float())
        return acts.numpy(), sae.decode(acts).numpy()


def _set_weights(sae, arrays: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, value in arrays.items():
            getattr(sae, name).copy_(torch.from_numpy(value))


def _assert_same_sae(cfg, params, sae, architecture):
    for name, x in _inputs().items():
        acts, x_hat = _ours(cfg, params, x)
        their_acts, their_x_hat = _theirs(sae, x)
        _assert_close(acts, their_acts)
        _assert_close(x_hat, their_x_hat)
        assert ((acts > 0) == (their_acts > 0)).all(), name
        l0 = (acts > 0).sum(-1)
        assert l0.min() > 0
        if architecture == "topk":
            assert l0.max() <= K


# --------------------------------------------------------------------------------- ours -> sae-lens


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_ours_load_in_sae_lens_and_encode_the_same(tmp_path, architecture):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=architecture, k=K, model="smollm2-135m", layer=3)
    params = _params(_random_arrays(1))
    out = save_sae(tmp_path / "sae", cfg, params, metadata={"fvu": 0.12, "tokens": 4096})
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]

    sae = sae_lens.SAE.load_from_disk(out)
    assert type(sae) is {"topk": sae_lens.TopKSAE, "standard": sae_lens.StandardSAE}[architecture]
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (D_IN, D_SAE)
    assert sae.cfg.metadata.model_name == "smollm2-135m"
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_pre"
    assert sae.cfg.metadata.stf_jax["fvu"] == 0.12
    if architecture == "topk":
        assert sae.cfg.k == K and sae.cfg.rescale_acts_by_decoder_norm is False
    _assert_same_sae(cfg, params, sae, architecture)

    # b_dec matters at this offset: without it the codes would be far from sae-lens'
    x = _inputs()["big"]
    no_b_dec = params.replace(b_dec=jnp.zeros(D_IN))
    assert np.abs(_ours(cfg, no_b_dec, x)[0] - _theirs(sae, x)[0]).max() > 1.0


# --------------------------------------------------------------------------------- sae-lens -> ours


CASES = {
    "topk": ("topk", {}),
    "standard": ("standard", {}),
    "topk rescaled by |W_dec|": ("topk", {"rescale_acts_by_decoder_norm": True}),
    "standard without b_dec on input": ("standard", {"apply_b_dec_to_input": False}),
    "topk rescaled, no b_dec on input": ("topk", {"rescale_acts_by_decoder_norm": True,
                                                  "apply_b_dec_to_input": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sae_lens_saes_load_in_ours_and_encode_the_same(tmp_path, case):
    architecture, options = CASES[case]
    meta = SAEMetadata(model_name="gpt2", hook_name="blocks.5.hook_resid_post", prepend_bos=True)
    if architecture == "topk":
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, metadata=meta, **options))
    else:
        sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta, **options))
    # b_dec near the big inputs' mean, except where the input does not subtract it: there our encoder (which
    # always does) gets b_enc + b_dec @ W_enc, and float32 cancellation would cost ~eps * |b_dec @ W_enc| on
    # the small inputs, beyond 1e-5 of their codes for |b_dec| = 1000 (~3e-5)
    small_b_dec = np.random.default_rng(20).normal(size=D_IN).astype(np.float32)
    _set_weights(sae, _random_arrays(2, None if options.get("apply_b_dec_to_input", True) else small_b_dec))
    sae.save_model(tmp_path / "sae")

    cfg, params, metadata = load_sae(tmp_path / "sae")
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.model, cfg.layer) == (architecture, D_IN, D_SAE, "gpt2", 6)
    if architecture == "topk":
        assert cfg.k == K
    assert metadata["hook_name"] == "blocks.5.hook_resid_post" and metadata["prepend_bos"] is True
    _assert_same_sae(cfg, params, sae, architecture)


def test_sae_lens_training_sae_saved_for_inference_loads_in_ours(tmp_path):
    """sae-lens' trainer saves with save_inference_model, folding the decoder norms of its default
    rescale_acts_by_decoder_norm=True into the weights."""
    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    assert sae.cfg.rescale_acts_by_decoder_norm
    _set_weights(sae, _random_arrays(3))
    sae.save_inference_model(tmp_path / "sae")
    cfg, params, metadata = load_sae(tmp_path / "sae")
    assert metadata["training_architecture"] == "topk" and cfg.layer == -1 and cfg.model == ""
    _assert_same_sae(cfg, params, sae, "topk")


def test_bfloat16_sae_lens_weights_load_as_float32(tmp_path):
    cfg = sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, dtype="bfloat16")
    sae = sae_lens.TopKSAE(cfg)
    _set_weights(sae, _random_arrays(4))
    sae.save_model(tmp_path / "sae")
    ours_cfg, params, _ = load_sae(tmp_path / "sae")
    assert params.W_enc.dtype == jnp.float32
    exact = sae_lens.SAE.load_from_disk(tmp_path / "sae", dtype="float32")  # the bf16 values, widened
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        np.testing.assert_array_equal(np.asarray(getattr(params, name)), getattr(exact, name).detach().numpy())
    _assert_same_sae(ours_cfg, params, exact, "topk")


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_save_then_load_gives_the_same_sae(tmp_path, architecture):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=architecture, k=K, l1_coefficient=2.5, aux_k=64,
                    aux_coefficient=0.05, model="gemma3-270m", layer=0)
    arrays = _random_arrays(5)
    stats = {"fvu": np.float32(0.25), "dead": np.array([1, 2]), "note": "seed 5"}
    save_sae(tmp_path / "a" / "sae", cfg, _params(arrays), metadata=stats)  # parents are created
    got_cfg, got, metadata = load_sae(tmp_path / "a" / "sae")
    assert got_cfg == cfg
    for name, value in arrays.items():
        assert getattr(got, name).dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), value)
    assert metadata["fvu"] == 0.25 and metadata["dead"] == [1, 2] and metadata["note"] == "seed 5"
    assert metadata["hook_name"] == "blocks.0.hook_resid_pre" and metadata["model_name"] == "gemma3-270m"
    assert metadata["architecture"] == architecture and metadata["layer"] == 0

    # saving again over it replaces it as a whole
    other = _random_arrays(6)
    save_sae(tmp_path / "a" / "sae", cfg, _params(other))
    np.testing.assert_array_equal(np.asarray(load_sae(tmp_path / "a" / "sae")[1].W_dec), other["W_dec"])
    assert "fvu" not in load_sae(tmp_path / "a" / "sae")[2]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sae"]


# --------------------------------------------------------------------------------- bad files


def _cfg(path: Path) -> dict:
    return json.loads((path / "cfg.json").read_text())


def _edit_cfg(path: Path, **changes) -> None:
    (path / "cfg.json").write_text(json.dumps({**_cfg(path), **changes}))


def _rewrite_weights(path: Path, change) -> None:
    weights = safetensors.numpy.load_file(path / "sae_weights.safetensors")
    change(weights)
    safetensors.numpy.save_file(weights, path / "sae_weights.safetensors")


def _truncate(path: Path) -> None:
    f = path / "sae_weights.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _nan(w):
    w["W_dec"][3, 5] = np.nan


def _transpose(w):
    w["W_enc"] = np.ascontiguousarray(w["W_enc"].T)


DAMAGE = {
    "missing directory": (lambda p: p.rename(p.with_name("gone")), "no such SAE directory"),
    "cfg.json removed": (lambda p: (p / "cfg.json").unlink(), "cfg.json: missing"),
    "cfg.json garbage": (lambda p: (p / "cfg.json").write_text("{'d_in': 48,"), "cfg.json: not valid JSON"),
    "cfg.json a list": (lambda p: (p / "cfg.json").write_text("[1, 2]"), "not an object"),
    "no d_sae": (lambda p: (p / "cfg.json").write_text(json.dumps({k: v for k, v in _cfg(p).items()
                                                                     if k != "d_sae"})), "no 'd_sae'"),
    "weights removed": (lambda p: (p / "sae_weights.safetensors").unlink(), "sae_weights.safetensors: missing"),
    "weights truncated": (_truncate, "truncated"),
    "weights garbage": (lambda p: (p / "sae_weights.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"not json" * 2),
                        "not a safetensors file"),
    "tensor missing": (lambda p: _rewrite_weights(p, lambda w: w.pop("b_enc")), "no tensor 'b_enc'"),
    "W_enc transposed": (lambda p: _rewrite_weights(p, _transpose), "W_enc has shape [192, 48]"),
    "NaN in W_dec": (lambda p: _rewrite_weights(p, _nan), "W_dec has non-finite values"),
    "jumprelu": (lambda p: _edit_cfg(p, architecture="jumprelu"), "architecture 'jumprelu' is not supported"),
    "k > d_sae": (lambda p: _edit_cfg(p, k=D_SAE + 1), "k= 193 is more than the 192 latents"),
    "k = 0": (lambda p: _edit_cfg(p, k=0), "k= 0 is not a positive integer"),
    "layer norm": (lambda p: _edit_cfg(p, normalize_activations="layer_norm"), "normalizes every token"),
    "unfolded scale": (lambda p: _edit_cfg(p, normalize_activations="expected_average_only_in"), "fold them in"),
    "stf_jax layer not a number": (lambda p: _edit_cfg(p, metadata={"stf_jax": {"layer": "three"}}),
                                   "layer= must be an integer"),
    "stf_jax k disagrees": (lambda p: _edit_cfg(p, k=K + 1), "k= 9 but metadata.stf_jax.k is 8"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_sae_directory_is_a_one_line_error(tmp_path, damage):
    path = save_sae(tmp_path / "sae", SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K), _params(_random_arrays(8)))
    break_it, expected = DAMAGE[damage]
    break_it(path)
    with pytest.raises(SAEFileError) as e:
        load_sae(path)
    message = str(e.value)
    assert expected in message and "\n" not in message, message
    assert str(path) in message


def test_a_sae_lens_jumprelu_sae_is_refused_by_name(tmp_path):
    sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))
    sae.save_model(tmp_path / "sae")
    with pytest.raises(SAEFileError, match=r"architecture 'jumprelu' is not supported; stf_jax reads sae-lens' "
                                           r"'topk' and 'standard' SAEs"):
        load_sae(tmp_path / "sae")


def test_a_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(safetensors.numpy, "save", broken)
        with pytest.raises(OSError, match="disk on fire"):
            save_sae(tmp_path / "sae", cfg, _params(_random_arrays(9)))
    assert list(tmp_path.iterdir()) == []  # no target, no hidden temporary directory

    # over an existing SAE: the old one stays whole
    old = _random_arrays(10)
    save_sae(tmp_path / "sae", cfg, _params(old))
    with monkeypatch.context() as m:
        m.setattr(safetensors.numpy, "save", broken)
        with pytest.raises(OSError):
            save_sae(tmp_path / "sae", cfg, _params(_random_arrays(11)))
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    np.testing.assert_array_equal(np.asarray(load_sae(tmp_path / "sae")[1].W_enc), old["W_enc"])


def test_save_refuses_a_directory_that_is_not_an_sae_and_bad_params(tmp_path):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)
    params = _params(_random_arrays(12))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(SAEFileError, match="exists and is not an SAE directory"):
        save_sae(tmp_path / "notes", cfg, params)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    save_sae(tmp_path / "empty", cfg, params)  # an empty directory is fine
    assert load_sae(tmp_path / "empty")[0] == cfg
    with pytest.raises(ValueError, match="params.W_enc has shape"):
        save_sae(tmp_path / "x", SAEConfig(d_in=D_IN + 1, d_sae=D_SAE, k=K), params)
    with pytest.raises(ValueError, match="non-finite"):
        save_sae(tmp_path / "x", cfg, params.replace(b_enc=params.b_enc.at[0].set(jnp.inf)))
    with pytest.raises(ValueError, match="config fields"):
        save_sae(tmp_path / "x", cfg, params, metadata={"k": 3})
    assert not (tmp_path / "x").exists()
