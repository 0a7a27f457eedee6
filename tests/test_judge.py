"""Judges of steered text (hand-computed values), the fluency guard, per-row steering in one generation batch,
the behavioural statistics, the OOD pair set, few-shot maps on planted data, and the judge CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stf_jax.judge import JUDGES, fluency, hedging, informality, length, readability, score, sentiment, text
from stf_jax.judge.__main__ import main as judge_main

pytest.importorskip("vaderSentiment")
pytest.importorskip("textstat")


# ---------------------------------------------------------------- text units and judges, by hand


def test_words_and_sentences():
    assert text.words("Don't stop—it's 5 o'clock!") == ["Don't", "stop", "it's", "5", "o'clock"]
    assert text.sentences("Hi there. How are you?! Fine") == ["Hi there.", "How are you?!", "Fine"]
    assert text.sentences("") == [] and np.isnan(text.per_100_words(1, 0))


def test_length_judge():
    assert length.score(["one two three.", ""]).tolist() == [3.0, 0.0]
    assert length.length_profile("A b. C d e!") == {"words": 5.0, "sentences": 2.0, "words_per_sentence": 2.5}


def test_informality_markers_by_hand():
    # Hey (slang), I'm (contraction + pronoun I), gonna (contraction), you (pronoun), stuff (slang), "!" : 7 / 7 words
    m = informality.markers("Hey, I'm gonna send you the stuff!")
    assert m == {"contractions": 2, "slang": 2, "exclamations": 1, "pronouns": 2, "words": 7}
    assert informality.informality_rate("Hey, I'm gonna send you the stuff!") == pytest.approx(100.0)
    assert score("formality", ["The report will be forwarded tomorrow."]).tolist() == [0.0]
    assert score("formality", ["Hey, can you send it?"]).tolist() == [-40.0]  # hey + you over 5 words
    assert np.isnan(score("formality", [""])[0])


def test_hedging_by_hand():
    # hedges: "i think", "might", "not sure" (sure is used by the phrase); boosters: "definitely", "clear"
    c = hedging.counts("I think it might rain, but it will definitely clear up. Not sure though.")
    assert c == {"hedges": 3, "boosters": 2, "words": 14}
    assert hedging.hedge_balance("I think it might rain, but it will definitely clear up. Not sure though.") == \
        pytest.approx(100 * 1 / 14)
    assert score("certainty", ["It is certainly true."]).tolist() == [pytest.approx(25.0)]


def test_readability_by_hand():
    # 'pharmacokinetic' and 'lab' are off the Dale-Chall list: 2 of 8 words
    assert readability.difficult_words("The dog ran home to the pharmacokinetic lab.") == ["pharmacokinetic", "lab"]
    assert score("technical_complexity", ["The dog ran home to the pharmacokinetic lab."])[0] == pytest.approx(25.0)
    # Coleman-Liau: 17 letters / 6 words, 1 sentence: 0.058*283.33 - 0.296*16.67 - 15.8 = -4.3
    assert readability.coleman_liau("The cat sat on the mat.") == pytest.approx(-4.3, abs=0.01)
    assert score("accessibility", ["The cat sat on the mat."])[0] == pytest.approx(4.3, abs=0.01)


def test_vader_mean_over_sentences():
    # VADER's lexicon: "good" 1.9 -> compound 0.4404, "bad" -2.5 -> -0.5423; the judge averages sentences
    a = sentiment.analyzer()
    assert a.polarity_scores("Good.")["compound"] == pytest.approx(0.4404)
    assert sentiment.valence("Good. Bad.") == pytest.approx((0.4404 - 0.5423) / 2)
    assert score("optimism", [""]).tolist() == [0.0]
    assert score("emotional_tone", ["I love this, it is wonderful."])[0] > 0.5 > score("emotional_tone", ["I hate it."])[0]


def test_judges_order_the_shipped_pairs():
    """Each judge ranks its trait's positive side above the negative on most hand-written pairs."""
    from stf_jax.judge.validate import validate_judges

    res = validate_judges("shipped")["traits"]
    assert set(res) == set(JUDGES)
    for trait, r in res.items():
        assert r["accuracy"] >= 0.7, (trait, r)


# ---------------------------------------------------------------- fluency guard


def test_repetition_and_guard():
    assert fluency.repetition_rate("a b c a b c") == pytest.approx(0.25)  # abc bca cab abc: 1 of 4 repeats
    assert fluency.repetition_rate("the the the the the") == pytest.approx(2 / 3)
    assert fluency.repetition_rate("too short") == 0.0
    assert fluency.guard(0.5, 0.1) and not fluency.guard(1.5, 0.0) and not fluency.guard(0.2, 0.3)
    assert not fluency.guard(float("nan"), 0.0)


# ---------------------------------------------------------------- behavioural statistics


def test_condition_stats_effect_and_ratio():
    from stf_jax.core.stats import resample_indices as _boot_idx
    from stf_jax.judge.behaviour import condition_stats

    n = 10
    base = np.zeros(n)
    idx = _boot_idx(n, 200, 0)
    native = condition_stats(base, np.full(n, 2.0), np.full(n, -2.0), None, idx)
    assert native["effect"]["mean"] == pytest.approx(2.0) and native["delta_minus"]["mean"] == pytest.approx(-2.0)
    half = condition_stats(base, np.full(n, 1.0), np.full(n, -1.0), np.full(n, 2.0), idx)
    assert half["ratio_to_native"]["mean"] == pytest.approx(0.5)
    assert half["ratio_to_native"]["lo"] == pytest.approx(0.5) == half["ratio_to_native"]["hi"]
    noisy = condition_stats(base, np.r_[np.full(5, 1.0), np.full(5, np.nan)], np.full(n, -1.0), np.full(n, 2.0), idx)
    assert noisy["n_prompts"] == 5 and noisy["effect"]["mean"] == pytest.approx(1.0)


# ---------------------------------------------------------------- generation: one vector per row


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import stf_jax

    return stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))


def test_calibration_counts_the_traits_whose_guard_holds():
    """A grid value passes when native steering is fluent for >= the configured share of traits (per trait,
    at +a and at -a); a mean over traits would let one broken trait hide behind fluent ones."""
    from stf_jax.judge.behaviour import BehaviourConfig, _calibration_row

    traits = ("verbosity", "formality", "hedging", "optimism")
    specs = [{"condition": "unsteered", "trait": "", "alpha": 0.0}]
    specs += [{"condition": "native", "trait": t, "alpha": s * 0.2} for t in traits for s in (1.0, -1.0)]
    texts = [["It may rain today. Perhaps.", "Short answer here, friend."]] * len(specs)
    prompts = ["p1", "p2"]
    rep = np.zeros((len(specs), 2))
    lp = np.full((len(specs), 2), -2.0)
    lp[specs.index({"condition": "native", "trait": "formality", "alpha": -0.2})] = -4.5  # drop 2.5 nats at -a
    row = _calibration_row(0.2, specs, texts, lp, rep, prompts, BehaviourConfig(traits=traits))
    assert row["guard_per_trait"] == {"verbosity": True, "formality": False, "hedging": True, "optimism": True}
    assert row["n_guard_pass"] == 3 and row["fluent"]  # 3/4 >= 0.75
    assert abs(row["logprob_drop"] - 2.5 / 8) < 1e-9  # the mean over traits and signs would pass anyway
    strict = _calibration_row(0.2, specs, texts, lp, rep, prompts, BehaviourConfig(traits=traits, calibration_guard_fraction=1.0))
    assert not strict["fluent"]
    rep[specs.index({"condition": "native", "trait": "hedging", "alpha": 0.2})] = 0.5  # loops at +a
    assert not _calibration_row(0.2, specs, texts, lp, rep, prompts, BehaviourConfig(traits=traits))["fluent"]  # 2/4


def test_per_row_vectors_equal_one_generation_per_vector(tiny):
    """Rows steered with different vectors and signs in one batch generate exactly what separate calls do."""
    from stf_jax.steer.inject import row_intervention
    from stf_jax.models.generate import generate
    from stf_jax.steer.inject import make_intervention, position_mask

    m = tiny
    prompts = ["hello there", "a b c d e f"]
    rng = np.random.default_rng(0)
    v1, v2 = (u / np.linalg.norm(u) for u in rng.standard_normal((2, m.config.d_model)))

    def one(v, a):
        return generate(m, prompts, max_new_tokens=10, intervention_for=lambda mk: make_intervention(
            m.config, [2], v, a, position_mask(mk), scale=2.0))

    rows = np.stack([6 * v1, 6 * v1, -6 * v2, -6 * v2, 0 * v1, 0 * v1]).astype(np.float32)
    got = generate(m, prompts * 3, max_new_tokens=10,
                   intervention_for=lambda mk: row_intervention(m.config, 2, rows, position_mask(mk)))
    # alpha = 0 through make_intervention is the unsteered model, bit for bit (one compiled program for all three)
    assert got[:2] == one(v1, 3.0) and got[2:4] == one(v2, -3.0) and got[4:] == one(v1, 0.0)
    assert got[:2] != got[4:]  # the steering did something


def test_unsteered_logprob_matches_pytorch(tiny, tiny_model_dir):
    """Mean log P(completion | prompt) per token equals transformers' model on the same tokens."""
    import torch
    import transformers

    m = tiny
    prompts, conts = ["hello there", "abc"], ["general kenobi", ""]
    lp = fluency.unsteered_logprob(m, prompts, conts, chat_template=False, max_tokens=8, batch_size=2)
    tok = m.tokenizer
    p = tok(prompts[0], add_special_tokens=True)["input_ids"]
    c = tok(conts[0], add_special_tokens=False)["input_ids"][:8]
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama_gqa_untied_rope3")).eval()
    with torch.no_grad():
        logp = torch.log_softmax(ref(torch.tensor([p + c])).logits[0].double(), -1).numpy()
    want = np.mean([logp[len(p) - 1 + i, c[i]] for i in range(len(c))])
    assert lp[0] == pytest.approx(want, abs=1e-4)
    assert np.isnan(lp[1])


# ---------------------------------------------------------------- prompts and OOD pairs


def test_prompts_and_ood_pairs_are_held_out_and_well_formed():
    from stf_jax.data import load_pairs
    from stf_jax.data.schema import TRAITS
    from stf_jax.judge import prompts
    from stf_jax.judge.ood import BASELINES

    ood = load_pairs(Path(__file__).parents[1] / "stf_jax" / "data" / "ood_pairs")
    shipped = load_pairs("shipped")
    counts = {}
    for p in ood:
        counts[p.trait] = counts.get(p.trait, 0) + 1
        assert p.positive.strip() and p.negative.strip() and p.positive != p.negative
    assert min(counts.values()) >= 12
    assert len([t for t in counts if t in TRAITS]) >= 8 and len([t for t in counts if t not in TRAITS]) >= 2
    shipped_texts = {s for p in shipped for s in (p.prompt, p.positive, p.negative)}
    ood_texts = {s for p in ood for s in (p.prompt, p.positive, p.negative)}
    assert not (ood_texts & shipped_texts)
    all_prompts = set(prompts.EVAL) | set(prompts.CALIBRATION)
    assert len(prompts.EVAL) >= 24 and not (all_prompts & (shipped_texts | ood_texts))
    assert not set(prompts.EVAL) & set(prompts.CALIBRATION)
    assert BASELINES == ("identity", "mean_target", "trait_mean")


# ---------------------------------------------------------------- maps and few-shot on planted data


def test_centered_cosines_match_align_metrics():
    import jax.numpy as jnp

    from stf_jax.align.metrics import row_cosines
    from stf_jax.judge.maps import centered_cosines

    rng = np.random.default_rng(1)
    a, b, mu = rng.standard_normal((5, 7)), rng.standard_normal((5, 7)), rng.standard_normal(7)
    raw, cen = centered_cosines(a, b, mu)
    ref = row_cosines(jnp.asarray(a), jnp.asarray(b), jnp.asarray(mu))
    np.testing.assert_allclose(raw, np.asarray(ref.raw), atol=1e-5)
    np.testing.assert_allclose(cen, np.asarray(ref.centered), atol=1e-5)


def test_fewshot_on_a_planted_linear_relation():
    """x_t = x_s A exactly: with all traits the affine map is near-perfect on held-out traits; with one
    trait and two pairs it cannot be (it sees a rank-1 slice of the relation)."""
    from stf_jax.judge.fewshot import fewshot_direction

    rng = np.random.default_rng(0)
    n_traits, per, d_s, d_t = 6, 20, 12, 10
    traits = np.repeat([f"t{i}" for i in range(n_traits)], per)
    x_s = rng.standard_normal((n_traits * per, d_s)) + np.repeat(rng.standard_normal((n_traits, d_s)) * 2, per, 0)
    x_t = x_s @ rng.standard_normal((d_s, d_t))
    w_test = (np.arange(len(traits)) % per >= 16).astype(np.float32)
    w_train = 1 - w_test
    res = fewshot_direction(x_s, x_t, traits, w_train, w_test, methods=("affine",), n_traits=(1, 5),
                            pairs=(2, None), repeats=2, ridge=1e-6)
    cell = {(c["method"], c["n_traits"], c["pairs_per_trait"]): c for c in res["cells"]}
    assert cell[("affine", 5, None)]["centered"]["mean"] > 0.99
    assert cell[("affine", 5, None)]["trait_cos"]["mean"] > 0.99
    assert cell[("affine", 1, 2)]["centered"]["mean"] < 0.9


# ---------------------------------------------------------------- CLI


def test_judge_cli(capsys):
    assert judge_main(["score", "formality", "Hey, can you send it?"]) == 0
    assert capsys.readouterr().out.startswith("-40\t")
    assert judge_main(["list"]) == 0 and "hedging" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        judge_main(["--help"])
    assert e.value.code == 0
    for sub in ("score", "validate", "behaviour", "ood", "fewshot", "merge", "figures"):
        with pytest.raises(SystemExit) as e:
            judge_main([sub, "--help"])
        assert e.value.code == 0


def test_behaviour_flags_are_the_config_fields(capsys):
    from stf_jax.judge.__main__ import JudgeArgumentError, behaviour_config, build_parser
    from stf_jax.judge.behaviour import BehaviourConfig

    parse = build_parser().parse_args
    assert behaviour_config(parse(["behaviour", "run", "--out", "o"])) == BehaviourConfig()
    cfg = behaviour_config(parse(["behaviour", "run", "--out", "o", "--prompts", "12", "--controls", "--sampled",
                                  "--calibration-guard-fraction", "1", "--traits", "hedging", "verbosity"]))
    assert cfg == BehaviourConfig(n_prompts=12, controls=(), sampled=True, calibration_guard_fraction=1.0,
                                  traits=("hedging", "verbosity"))
    assert "--prompts is deprecated; use --n-prompts" in capsys.readouterr().err
    with pytest.raises(JudgeArgumentError, match="no judge for trait 'loudness'"):
        behaviour_config(parse(["behaviour", "run", "--out", "o", "--traits", "loudness"]))
    from stf_jax.transfer.carry_settings import CarrySettings  # s2l's SAE and many-to-one's stack, as steer eval's

    cfg = behaviour_config(parse(["behaviour", "run", "--out", "o", "--methods", "s2l", "many_to_one", "--sae", "S",
                                  "--sae-k", "8", "--stack", "3"]))
    assert cfg == BehaviourConfig(methods=("s2l", "many_to_one"), carry=CarrySettings(sae="S", sae_k=8, stack=3))


def test_judge_cli_expected_errors_are_one_line(capsys):
    from stf_jax.errors import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(judge_main, ["score", "no_such_trait", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no judge for trait 'no_such_trait'") and err.count("\n") == 1
    from stf_jax.core.layers import LayerSpecError, model_layer_pairs as _layers

    with pytest.raises(LayerSpecError, match="MODEL:LAYER"):
        _layers(["12"], ["a", "b"])
    with pytest.raises(LayerSpecError, match="no layer for model"):
        _layers(["a:1"], ["a", "b"])
    assert _layers(["a:1", "b:2"], ["a", "b"]) == {("a", "b"): (1, 2), ("b", "a"): (2, 1)}


def test_behaviour_tables_are_the_judges_of_the_cached_generations(tiny_model_dir, tmp_path, monkeypatch):
    """run_behaviour end to end on two tiny models: every Δ at ±a and every effect in the results equals the
    judge applied to the generations it cached (the right condition, trait and sign against the unsteered
    text), native's ratio is absent and the others' is effect / native effect. The tiny models write random
    bytes, so verbosity's judge is swapped for one that differs between any two texts (a checksum)."""
    import json

    from stf_jax.judge import Judge

    monkeypatch.setitem(JUDGES, "verbosity", Judge("verbosity", "checksum", "", lambda texts: [
        sum(i * ord(ch) for i, ch in enumerate(x)) % 997 for x in texts], "", ""))

    from stf_jax.data.pairs import load_pairs
    from stf_jax.extract.driver import ExtractOptions, extract_pairs
    from stf_jax.extract.store import pair_tag
    from stf_jax.judge.behaviour import BehaviourConfig, run_behaviour

    names = [str(tiny_model_dir("llama_gqa_untied_rope3")), str(tiny_model_dir("gemma3_pattern"))]
    traits = ("formality", "verbosity")
    pairs = [p for p in load_pairs("shipped") if p.trait in traits]
    extract_pairs(names, pairs, tmp_path / "run", ExtractOptions(layers=("2",), progress=False))
    cfg = BehaviourConfig(traits=traits, methods=("affine",), controls=("random",), alpha=4.0, n_prompts=4,
                          max_new_tokens=8, bootstrap=50, batch_rows=8, fluency_tokens=4, k=8)
    res = run_behaviour(tmp_path / "run", cfg, layer=2, directions=[(names[1], names[0])], out_dir=tmp_path / "out",
                        log=lambda *_: None)
    d = res["directions"][0]
    texts = {}
    for line in (tmp_path / "out" / "generations" / f"{pair_tag(names[1], names[0])}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        texts[(rec["condition"], rec["trait"], rec["alpha"])] = rec["texts"]
    conditions = d["modes"]["greedy"]["conditions"]
    assert list(conditions) == ["native", "affine", "random"]
    moved = ratios = 0
    for t in traits:
        judge = JUDGES[t]
        base = judge(texts[("unsteered", "", 0.0)])
        native = None
        for c, row in conditions.items():
            plus, minus = judge(texts[(c, t, 4.0)]), judge(texts[(c, t, -4.0)])
            r = row["traits"][t]
            with np.errstate(invalid="ignore"):
                assert r["delta_plus"]["mean"] == pytest.approx(np.nanmean(plus - base), nan_ok=True)
                assert r["delta_minus"]["mean"] == pytest.approx(np.nanmean(minus - base), nan_ok=True)
                effect = np.nanmean((plus - minus) / 2)
            assert r["effect"]["mean"] == pytest.approx(effect, nan_ok=True)
            if c == "native":
                native = effect
                assert "ratio_to_native" not in r
            elif np.isfinite(effect) and np.isfinite(native) and native != 0:
                assert r["ratio_to_native"]["mean"] == pytest.approx(effect / native, rel=1e-6)
                ratios += 1
            moved += texts[(c, t, 4.0)] != texts[("unsteered", "", 0.0)]
    assert ratios >= 1 and moved >= 4  # steering changed the text (the comparison above is not of identical texts)
    assert (tmp_path / "out" / "behaviour_results.md").read_text().count("| native |") >= 1
