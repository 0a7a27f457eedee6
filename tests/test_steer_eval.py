"""Causal steering evaluation: the cached-prefix scorer equals the full steered forward and PyTorch, the
statistics equal NumPy, and the driver recovers a planted exact transfer (ratio 1, r 1) against controls."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stf_jax
from stf_jax.models import decoder
from stf_jax.steer import make_intervention
from stf_jax.core import stats
from stf_jax.steer.propensity import PrefixScorer
from stf_jax.testing import max_rel_error, shipped_pairs, write_run
from test_steer import hooked_reference

PROMPTS = ["Describe the weather.", "Say hi to the team.", "What is a prime?"]
POS = ["It is sunny and warm today, a fine day.", "Hello everyone, lovely to see you all!", "A number with two divisors."]
NEG = ["Rain.", "Hi.", "It is a number that only one and itself divide evenly, like seven or thirteen."]


def _reference_propensity(model, scorer, logits):
    """Pos − neg mean log-prob of the scored tokens, from full logits [2P, S, V] (NumPy)."""
    logp = jax.nn.log_softmax(jnp.asarray(logits), -1)
    hi, tid, tm = (np.asarray(a) for a in (scorer.head_index, scorer.target_ids, scorer.target_mask))
    rows = np.arange(len(hi))[:, None]
    lp = (np.asarray(logp)[rows, hi, tid] * tm).sum(-1) / tm.sum(-1)
    return lp[: scorer.n] - lp[scorer.n:]


@pytest.mark.parametrize("name", ["llama_gqa_untied_rope3", "gemma3_pattern", "gemma2_softcap"])
def test_prefix_scorer_equals_full_steered_forward_and_pytorch_hook(name, tiny_model_dir):
    model_dir = tiny_model_dir(name)
    model = stf_jax.load_model(model_dir)
    layer = 2
    scorer = PrefixScorer(model, layer, PROMPTS, POS, NEG, max_tokens=8, width=64)
    v = np.random.default_rng(0).normal(size=model.config.d_model).astype(np.float32)
    unit = v / np.linalg.norm(v)
    total, count = scorer.mean_norm()
    scale = total / count
    for alpha in (0.0, 0.5, -1.5):
        ours = scorer.propensity(unit * scale, alpha)
        iv = make_intervention(model.config, [layer], v, alpha, np.asarray(scorer.mask, np.float32), scale=scale)
        logits, _ = decoder.logits_and_hidden_states(model.params, scorer.ids, scorer.mask, iv, cfg=model.config,
                                                     dtype=model.dtype)
        np.testing.assert_allclose(ours, _reference_propensity(model, scorer, logits), atol=2e-5)
        _, ref_logits = hooked_reference(model_dir, np.asarray(scorer.ids), np.asarray(scorer.mask), [layer], [v],
                                         alpha, "additive", np.asarray(scorer.mask, np.float32), scale=scale)
        np.testing.assert_allclose(ours, _reference_propensity(model, scorer, ref_logits), atol=1e-4)
    assert abs(scorer.propensity(unit * scale, 1.5) - scorer.propensity()).max() > 1e-3  # steering does something


def test_real_model_steered_states_logits_and_propensity_match_pytorch():
    """smollm2-135m (real weights): additive steering at layer 25, scaled to the mean residual norm."""
    from stf_jax.models.loading import convert_gguf
    from stf_jax.models.registry import resolve

    model_dir = convert_gguf(resolve("smollm2-135m"), progress=False)
    model = stf_jax.load_model("smollm2-135m")
    layer = 25
    scorer = PrefixScorer(model, layer, PROMPTS, POS, NEG, max_tokens=8)
    total, count = scorer.mean_norm()
    scale = total / count
    v = np.random.default_rng(1).normal(size=model.config.d_model).astype(np.float32)
    alpha = 0.2
    ids, mask = np.asarray(scorer.ids), np.asarray(scorer.mask)
    iv = make_intervention(model.config, [layer], v, alpha, mask.astype(np.float32), scale=scale)
    logits, states = model.logits(ids, mask, iv, layers="all")
    ref_states, ref_logits = hooked_reference(model_dir, ids, mask, [layer], [v], alpha, "additive",
                                              mask.astype(np.float32), scale=scale)
    errors = [max_rel_error(np.asarray(states)[i], ref_states[i], mask) for i in range(len(ref_states))]
    logit_error = max_rel_error(np.asarray(logits), ref_logits, mask)
    ours = scorer.propensity(v / np.linalg.norm(v) * scale, alpha)
    prop_error = np.abs(ours - _reference_propensity(model, scorer, ref_logits)).max()
    print(f"\nsmollm2-135m steered at layer {layer}: max rel error states {max(errors):.1e}, logits "
          f"{logit_error:.1e}; propensity max |Δ| {prop_error:.1e}")
    assert max(errors) <= 1e-4, errors
    assert logit_error <= 1e-4
    assert prop_error <= 1e-3
    assert np.abs(ours - scorer.propensity()).max() > 1e-2


def test_slopes_and_intervals_equal_numpy():
    rng = np.random.default_rng(0)
    alphas = np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
    curves = rng.normal(size=(5, 7)) + 3.0 * alphas[:, None]
    np.testing.assert_allclose(stats.slopes(alphas, curves), [np.polyfit(alphas, curves[:, j], 1)[0] for j in range(7)],
                               rtol=1e-10)
    x = rng.normal(size=400) + 1.0
    ci = stats.mean_ci(x, 2000, 0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert ci["mean"] == pytest.approx(x.mean())
    assert ci["lo"] == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert ci["hi"] == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)
    groups = np.repeat([0, 1, 2], [3, 5, 2])
    idx = stats.resample_indices(10, 50, 0, groups)
    assert (groups[idx] == groups[None, :]).all()  # resampled within each group


@pytest.fixture(scope="module")
def exact_transfer_run(tmp_path_factory, tiny_model_dir):
    """Source and target are one tiny model; target vectors = source vectors · Q (Q orthogonal), so the
    affine map is exact and its transferred trait vectors equal the target's own."""
    pairs = shipped_pairs(per_trait=24, n_traits=6)  # enough rows that every leave-one-trait-out fit is determined
    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    d, n_layers = model.config.d_model, model.config.n_layers
    rng = np.random.default_rng(0)
    traits = sorted({p.trait for p in pairs})
    means = rng.normal(size=(len(traits), d))
    x_s = np.stack([means[traits.index(p.trait)] + 0.3 * rng.normal(size=d) for p in pairs]).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x_t = (x_s @ q).astype(np.float32)
    layers_s = [x_s] * (n_layers + 1)
    layers_t = [x_t] * (n_layers + 1)
    root = write_run(tmp_path_factory.mktemp("steer_run"), pairs, {"src": layers_s, "tgt": layers_t})
    return root, {"src": model, "tgt": model}


def test_exact_transfer_matches_native_and_controls_do_not(exact_transfer_run, tmp_path):
    from stf_jax.steer.evaluate import SteerConfig, evaluate_steering
    from stf_jax.steer.results import write_steer_results

    root, models = exact_transfer_run
    cfg = SteerConfig(alphas=(-2.0, -1.0, 0.0, 1.0, 2.0), pairs_per_trait=3, methods=("affine", "procrustes"),
                      ridge=0.0, k=8, bootstrap=200, generation_trait=shipped_pairs(24, 6)[0].trait, generation_prompts=2,
                      max_new_tokens=4, self_injection_pairs=2)
    res = evaluate_steering(root, cfg, layer=2, directions=[("src", "tgt")], models=models, out_dir=tmp_path,
                            log=lambda *_: None)
    d = res["directions"][0]
    conds = d["conditions"]
    for t, row in conds["affine"]["traits"].items():
        assert row["cosine_to_native"] > 0.9999
        np.testing.assert_allclose(row["curve"]["mean"], conds["native"]["traits"][t]["curve"]["mean"], atol=1e-3)
        assert row["slope_ratio"] == pytest.approx(1.0, abs=1e-3)
        assert row["pearson_r"] == pytest.approx(1.0, abs=1e-5)
    # alpha = 0 is the same unsteered point for every condition; the native ratio is 1 by definition
    zero = res["alphas"].index(0.0)
    curves = {c: [e["traits"][t]["curve"]["mean"][zero] for t in e["traits"]] for c, e in conds.items()}
    assert all(v == curves["native"] for v in curves.values())
    assert conds["native"]["summary"]["effect_ratio"]["mean"] == pytest.approx(1.0)
    # the shuffled control is the best method's vectors on the wrong traits: its cosines to native differ
    assert d["shuffled_from"] in ("affine", "procrustes")
    assert all(row["cosine_to_native"] < 0.999 for row in conds["shuffled"]["traits"].values())
    gen = d["generation"]["conditions"]
    for key in ("mean_length_plus", "trait_score_delta_plus", "trait_score_delta_minus"):
        assert gen["affine"][key]["mean"] == pytest.approx(gen["native"][key]["mean"], abs=1e-3)
    assert gen["native"]["trait_score_delta_plus"]["mean"] != 0.0  # steering changed the completions' read-out
    assert d["exactness"]["alpha0_max_abs_diff"] == 0.0
    assert d["exactness"]["self_injection_max_abs_diff"] < 1e-5
    assert res["models"]["tgt"]["in_model"]["n_traits"] == 6
    comparisons = {(c["a"], c["b"]): c for c in d["comparisons"]}
    assert comparisons[("affine", "native")]["delta"]["mean"] == pytest.approx(0.0, abs=1e-3)
    slope = {c: conds[c]["summary"]["slope"]["mean"] for c in conds}  # method against method, on the same pairs
    assert comparisons[("procrustes", "affine")]["delta"]["mean"] == pytest.approx(slope["procrustes"] - slope["affine"])
    json_path, md_path, csv_path = write_steer_results(res, tmp_path)
    back = json.loads(json_path.read_text())
    assert back["directions"][0]["conditions"].keys() == conds.keys()
    md = md_path.read_text()
    assert "## src → tgt" in md and "| affine |" in md
    assert len(csv_path.read_text().splitlines()) == 1 + len(conds) * 6 * len(res["alphas"])
    saved = np.load(tmp_path / d["vectors"])
    assert saved["native/" + next(iter(conds["native"]["traits"]))].shape == (models["tgt"].config.d_model,)


def test_bad_steering_configs_fail_clearly(exact_transfer_run):
    from stf_jax.errors import SteeringInputError
    from stf_jax.steer.evaluate import SteerConfig, evaluate_steering

    root, models = exact_transfer_run
    with pytest.raises(ValueError, match="unknown steering method"):
        SteerConfig(methods=("rotate",))
    with pytest.raises(ValueError, match="two distinct alphas"):
        SteerConfig(alphas=(0.0,))
    with pytest.raises(SteeringInputError, match="not in the run"):
        evaluate_steering(root, SteerConfig(traits=("nonsense",)), models=models, log=lambda *_: None)
    with pytest.raises(SteeringInputError, match="'ghost' is not in"):
        evaluate_steering(root, SteerConfig(), directions=[("src", "ghost")], models=models, log=lambda *_: None)


def test_leave_one_trait_out_transfer_equals_numpy_lstsq_without_that_trait():
    from stf_jax.align.carry_traits import transferred_trait_vectors

    rng = np.random.default_rng(3)
    traits = np.repeat(["a", "b", "c", "d"], 30)
    x_s = rng.normal(size=(120, 10)).astype(np.float32) + (traits == "a")[:, None] * 2.0
    x_t = (x_s @ rng.normal(size=(10, 12)) + 0.1 * rng.normal(size=(120, 12))).astype(np.float32)
    w = (rng.random(120) < 0.8).astype(np.float32)
    out = transferred_trait_vectors(x_s, x_t, w, np.zeros(120, np.float32), traits, ("affine",), ridge=0.0)
    for t in "abcd":
        rows = (w > 0) & (traits != t)
        xs, xt = x_s[rows].astype(np.float64), x_t[rows].astype(np.float64)
        a = np.linalg.lstsq(xs - xs.mean(0), xt - xt.mean(0), rcond=None)[0]
        v = x_s[(w > 0) & (traits == t)].mean(0)
        np.testing.assert_allclose(out["affine"][t], (v - xs.mean(0)) @ a + xt.mean(0), rtol=1e-4, atol=1e-4)
    sub = transferred_trait_vectors(x_s, x_t, w, np.zeros(120, np.float32), traits, ("affine",), ridge=0.0, only=["b"])
    assert list(sub["affine"]) == ["b"]  # a subset is steered, but its maps still use every other trait's rows
    np.testing.assert_allclose(sub["affine"]["b"], out["affine"]["b"], rtol=1e-4, atol=1e-4)
    full = transferred_trait_vectors(x_s, x_t, w, np.zeros(120, np.float32), traits, ("affine",), holdout=False,
                                     ridge=0.0)
    assert np.abs(full["affine"]["a"] - out["affine"]["a"]).max() > 1e-3  # the held-out fit really differs


def test_multi_layer_vector_propensity_matches_pytorch_hooks_and_cli(tiny_model_dir, tmp_path, capsys):
    """`steered_propensity` (what `steer eval --vector FILE` runs) steers every layer a control vector holds, with
    the stored length: equal to transformers with a forward hook on each of those blocks. The CLI writes the
    curve and slope, and a stored-scale evaluation without strengths is a one-line error (exit 2)."""
    from stf_jax.data import save_pairs
    from stf_jax.data.schema import ContrastPair
    from stf_jax.errors import cli_main
    from stf_jax.steer.__main__ import main
    from stf_jax.steer.apply import steered_propensity
    from stf_jax.core.vectorfile import write_vector_file as export_control_vector
    from stf_jax.steer.propensity import encode_continuations

    model_dir = tiny_model_dir("llama_gqa_untied_rope3")
    model = stf_jax.load_model(model_dir)
    rng = np.random.default_rng(5)
    units = {lay: (lambda v: v / np.linalg.norm(v))(rng.normal(size=model.config.d_model)).astype(np.float32)
             for lay in (2, 3)}
    pairs = [ContrastPair(id=f"t-{i}", trait="t", prompt=p, positive=a, negative=b)
             for i, (p, a, b) in enumerate(zip(PROMPTS, POS, NEG))]
    alpha = 3.0
    ours = steered_propensity(model, units, pairs, [-alpha, alpha], n_boot=50)
    assert ours["layers"] == [2, 3] and ours["alphas"] == [-alpha, 0.0, alpha]

    def reference(side):
        ids, mask, target = encode_continuations(model, PROMPTS, side)
        _, logits = hooked_reference(model_dir, ids, mask, [2, 3], [units[2], units[3]], alpha, "additive",
                                     mask.astype(np.float32))
        logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits[:, :-1]), -1))
        lp = np.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0]
        return (lp * target[:, 1:]).sum(-1) / target[:, 1:].sum(-1)

    np.testing.assert_allclose(ours["curves"][2], reference(POS) - reference(NEG), atol=1e-4)
    assert np.abs(np.subtract(ours["curves"][2], ours["curves"][1])).max() > 1e-3  # steering does something

    vec = export_control_vector(tmp_path / "v.gguf", {k: v * 2 for k, v in units.items()}, model_hint="llama",
                                metadata={"trait": "t"})
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    common = ["eval", "--vector", str(vec), "--model", str(model_dir), "--pairs", str(tmp_path / "pairs.jsonl"),
              "--bootstrap", "50"]
    assert main([*common, "--alphas", "-1.5", "1.5", "--out", str(tmp_path / "ev")]) == 0
    saved = json.loads((tmp_path / "ev" / "vector_eval.json").read_text())
    np.testing.assert_allclose(saved["curves"], ours["curves"], atol=1e-5)  # |v| = 2 at 1.5 == unit at 3
    assert "slope" in capsys.readouterr().out and saved["trait"] == "t"
    with pytest.raises(SystemExit) as exc:
        cli_main(main, common)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "give --alphas" in err and len(err.strip().splitlines()) == 1


def _topk_codes(x: np.ndarray, w_enc: np.ndarray, k: int) -> np.ndarray:
    """NumPy reference of s2l's sparse code: x @ W_enc with all but the k largest magnitudes per row zeroed."""
    c = x.astype(np.float64) @ w_enc.astype(np.float64)
    keep = np.argsort(-np.abs(c), axis=-1)[..., :k]
    out = np.zeros_like(c)
    np.put_along_axis(out, keep, np.take_along_axis(c, keep, -1), -1)
    return out


def test_s2l_and_many_to_one_trait_vectors_equal_numpy_lstsq_without_that_trait(tmp_path):
    """Steering's leave-one-trait-out carrying for the methods that read other source rows: many-to-one fits
    on the stack of layers side by side and carries the stack's trait mean; s2l fits on the SAE's sparse codes
    of its layer's rows and carries the code of that layer's trait mean. Both equal NumPy's least squares on
    the fold's rows (ridge 0)."""
    from stf_jax.align.carry_traits import transferred_trait_vectors
    from stf_jax.sae.model import SAEConfig, init_params
    from stf_jax.sae.saelens import load_sae, save_sae

    rng = np.random.default_rng(5)
    traits = np.repeat(["a", "b", "c", "d"], 40)
    x_s = rng.normal(size=(160, 6)).astype(np.float32) + (traits == "a")[:, None]
    stack = np.concatenate([x_s, rng.normal(size=(160, 6)).astype(np.float32)], 1)  # [n, 2 * 6]
    x_sae = rng.normal(size=(160, 6)).astype(np.float32)
    x_t = (stack @ rng.normal(size=(12, 7)) + 0.1 * rng.normal(size=(160, 7))).astype(np.float32)
    w = (rng.random(160) < 0.8).astype(np.float32)
    cfg = SAEConfig(d_in=6, d_sae=10, k=5, model="A", layer=3)
    save_sae(tmp_path / "sae", cfg, init_params(cfg, jax.random.key(1)))
    w_enc = np.asarray(load_sae(tmp_path / "sae")[1].W_enc)
    sae = {"sae": str(tmp_path / "sae"), "sae_latents": 10, "sae_k": 5}
    out = transferred_trait_vectors(x_s, x_t, w, np.zeros(160, np.float32), traits, ("affine", "s2l", "many_to_one"),
                                    ridge=0.0, sources={"s2l": x_sae, "many_to_one": stack}, sae=sae)

    def lstsq_carry(x, v):  # x [n, d] rows the fold fits on, v [d] the trait mean carried
        xs, xt = x[rows].astype(np.float64), x_t[rows].astype(np.float64)
        a = np.linalg.lstsq(xs - xs.mean(0), xt - xt.mean(0), rcond=None)[0]
        return (v - xs.mean(0)) @ a + xt.mean(0)

    for t in "abcd":
        rows, own = (w > 0) & (traits != t), (w > 0) & (traits == t)
        np.testing.assert_allclose(out["many_to_one"][t], lstsq_carry(stack, stack[own].mean(0)), rtol=1e-3, atol=1e-3)
        codes = _topk_codes(x_sae, w_enc, 5)
        np.testing.assert_allclose(out["s2l"][t], lstsq_carry(codes, _topk_codes(x_sae[own].mean(0), w_enc, 5)),
                                   rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(out["affine"][t], lstsq_carry(x_s, x_s[own].mean(0)), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="sae="):
        transferred_trait_vectors(x_s, x_t, w, np.zeros(160, np.float32), traits, ("s2l",))


def test_steering_with_s2l_and_many_to_one(exact_transfer_run, tmp_path):
    """`evaluate_steering` steers s2l's and many-to-one's carried vectors beside the other methods: in the
    planted run (target = source · Q at every layer) many-to-one's stack and s2l with every SAE coefficient kept
    (a full-rank encoder: a linear change of basis) are exact, like affine; keeping fewer coefficients is not.
    The source layers each method read are recorded."""
    from stf_jax.transfer.carry_settings import CarrySettings
    from stf_jax.sae.model import SAEConfig, init_params
    from stf_jax.sae.saelens import save_sae
    from stf_jax.steer.evaluate import SteerConfig, evaluate_steering

    root, models = exact_transfer_run
    d = models["src"].config.d_model
    cfg = SAEConfig(d_in=d, d_sae=2 * d, k=4, model="src", layer=3)
    save_sae(tmp_path / "sae", cfg, init_params(cfg, jax.random.key(2)))
    base = dict(alphas=(-2.0, 0.0, 2.0), pairs_per_trait=2, methods=("affine", "s2l", "many_to_one"), ridge=1e-4,
                bootstrap=100, generation_trait=None, self_injection_pairs=0, controls=("random",))
    res = {k: evaluate_steering(root, SteerConfig(**base, carry=CarrySettings(sae=str(tmp_path / "sae"), sae_k=k,
                                                                             stack=3)),
                                layers={("src", "tgt"): (2, 2)}, directions=[("src", "tgt")], models=models,
                                log=lambda *_: None)["directions"][0] for k in (2 * d, 4)}
    full = res[2 * d]
    assert full["method_layers"] == {"s2l": [3], "many_to_one": [2, 3]}  # all steerable layers (2..n-1) of 4 blocks
    for c in ("affine", "s2l", "many_to_one"):
        for t, row in full["conditions"][c]["traits"].items():
            assert row["cosine_to_native"] > 0.999, (c, t, row["cosine_to_native"])
            np.testing.assert_allclose(row["curve"]["mean"], full["conditions"]["native"]["traits"][t]["curve"]["mean"],
                                       atol=2e-3)
    assert np.mean([r["cosine_to_native"] for r in res[4]["conditions"]["s2l"]["traits"].values()]) < 0.95
    assert full["conditions"]["random"]["summary"]["effect_ratio"]["mean"] < 0.5


def test_s2l_and_many_to_one_bad_input_is_one_line(exact_transfer_run, tmp_path):
    """s2l without an SAE, an SAE of another model or width, and a stack of one layer: one line, exit 2, no output."""
    import subprocess
    import sys

    from stf_jax.sae.model import SAEConfig, init_params
    from stf_jax.sae.saelens import save_sae

    root, models = exact_transfer_run
    d = models["src"].config.d_model
    save_sae(tmp_path / "other", SAEConfig(d_in=d, d_sae=8, k=2, model="tgt", layer=2),
             init_params(SAEConfig(d_in=d, d_sae=8, k=2), jax.random.key(0)))
    save_sae(tmp_path / "narrow", SAEConfig(d_in=d // 2, d_sae=8, k=2, layer=2),
             init_params(SAEConfig(d_in=d // 2, d_sae=8, k=2), jax.random.key(0)))
    cases = {("--methods", "s2l"): "give --sae DIR",
             ("--methods", "s2l", "--sae", str(tmp_path / "other")): "trained on tgt, not src",
             ("--methods", "s2l", "--sae", str(tmp_path / "narrow")): f"has {d}",
             ("--methods", "s2l", "--sae", str(tmp_path / "ghost")): "ghost",
             ("--methods", "many_to_one", "--stack", "1"): "--stack must be >= 2"}
    for extra, needle in cases.items():
        out = tmp_path / f"out{len(extra)}"
        r = subprocess.run([sys.executable, "-m", "stf_jax.steer", "eval", str(root), "--layers", "src:2", "tgt:2",
                            "--source", "src", *extra, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, (extra, r.stderr)
        assert not (out / "steer_results.json").exists()


def test_pairs_whose_sides_agree_on_the_scored_tokens_are_refused(exact_transfer_run, tmp_path):
    """A/B items as pairs differ only in their last token: propensity over the first 16 tokens would be 0 for
    every condition (a flat, meaningless table). steer eval says so in one line and names the length needed."""
    from stf_jax.errors import SteeringInputError
    from stf_jax.steer.evaluate import _prefix_scorers, SteerConfig
    from stf_jax.steer.propensity import first_difference
    from stf_jax.data.schema import ContrastPair

    root, models = exact_transfer_run
    model = models["tgt"]
    long = " ".join(["the same words again"] * 12)
    ab = [ContrastPair(id=f"x{i}", trait="x", prompt="", positive=long + " (A)", negative=long + " (B)") for i in range(2)]
    n = first_difference(model, "", ab[0].positive, ab[0].negative)
    assert n is not None and n > 16
    assert first_difference(model, "p", "same", "same") is None
    with pytest.raises(SteeringInputError, match=f"agree on their first 16 scored tokens.*max-continuation-tokens {n}"):
        _prefix_scorers(model, 2, {"x": ab}, SteerConfig())
    scorers, _ = _prefix_scorers(model, 2, {"x": ab}, SteerConfig(max_continuation_tokens=n))  # long enough: scored
    assert np.abs(scorers["x"].propensity()).max() > 0
