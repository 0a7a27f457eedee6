"""Maps fitted on a mixture of sources, coverage, and shipped data of more kinds (fast, planted runs).

The planted world: one true linear map W from the source model (d 24) to the target (d 32). Style pairs
move the source only inside a subspace S1, A/B behaviour items only inside S2 ⟂ S1 (plus a little
noise everywhere). A map fitted on styles alone has never seen S2: it must carry an A/B vector badly
*and say so* (low coverage); fitted on the mixture it carries a held-out behaviour's vector to where W
sends it, with high coverage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from stf_jax.align.affine import fit_affine
from stf_jax.data import load_pairs, validate_pairs
from stf_jax.data.corpus import corpus_pairs, load_corpus
from stf_jax.core.vectorfile import read_control_vector as load_control_vector, write_vector_file as export_control_vector
from stf_jax.testing import write_run
from stf_jax.transfer import CoverageError, carry, fit_map, load_map_set
from stf_jax.transfer.coverage import coverage, coverage_basis, scatter
from stf_jax.transfer.kinds import Fit, kinds_report, spearman
from stf_jax.transfer.mixture import Moments, fit_affine_moments

D_S, D_T, HALF = 24, 32, 3  # styles and A/B each move 3 of the 24 source axes
QUIET = dict(norms=None, log=lambda *a: None)


def _world(seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((D_S, D_S)))
    return q[:, :HALF], q[:, HALF:2 * HALF], rng.standard_normal((D_S, D_T))  # S1, S2, W


def _rows(pairs, basis, w, seed):
    """Unit source rows: a trait centre + within-trait spread, both inside `basis`, small noise elsewhere."""
    rng = np.random.default_rng(seed)
    names = sorted({p.trait for p in pairs})
    centers = rng.standard_normal((len(names), basis.shape[1])) * 1.5
    z = centers[[names.index(p.trait) for p in pairs]] + rng.standard_normal((len(pairs), basis.shape[1]))
    signal = z @ basis.T
    x = signal + 0.02 * rng.standard_normal((len(pairs), D_S))  # each model's own noise: carries no map
    y = signal @ w + 0.02 * rng.standard_normal((len(pairs), D_T))
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    return unit(x), unit(y)


def _planted_run(root: Path, dataset: str, basis, w, seed, per_trait=30, n_traits=8) -> Path:
    pairs, seen = [], {}
    for p in load_pairs(dataset):
        if (len(seen) < n_traits or p.trait in seen) and seen.get(p.trait, 0) < per_trait:
            pairs.append(p)
            seen[p.trait] = seen.get(p.trait, 0) + 1
    x, y = _rows(pairs, basis, w, seed)
    run = write_run(root, pairs, {"A": [x] * 4, "B": [y] * 4})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["source"]["dataset"] = dataset
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    s1, s2, w = _world()
    root = tmp_path_factory.mktemp("mix")
    return {"styles": _planted_run(root / "styles", "shipped", s1, w, 1),
            "ab": _planted_run(root / "ab", "ab", s2, w, 2), "s1": s1, "s2": s2, "w": w}


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_moments_fit_is_fit_affine():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 20))
    y = x @ rng.standard_normal((20, 12)) + 0.1 * rng.standard_normal((200, 12)) + 1.0
    ref = fit_affine(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.ones(200), ridge=0.1)
    got, gram = fit_affine_moments(Moments.of(x, y, np.ones(200)), ridge=0.1)
    np.testing.assert_allclose(got.weight, np.asarray(ref.weight), atol=2e-5)
    np.testing.assert_allclose(got.bias, np.asarray(ref.bias), atol=2e-5)
    # subtracting rows' moments is refitting without them
    keep = np.arange(200) >= 50
    part, _ = fit_affine_moments(Moments.of(x, y, np.ones(200)) - Moments.of(x[:50], y[:50], np.ones(50)), 0.1)
    direct, _ = fit_affine_moments(Moments.of(x[keep], y[keep], np.ones(150)), 0.1)
    np.testing.assert_allclose(part.weight, direct.weight, atol=1e-8)


def test_coverage_is_leverage():
    """|B u|² from the stored basis = uᵀ G (G+λI)⁻¹ u (an explicit solve); near 1 inside the data's span
    (variance well above the mean per axis), ~0 orthogonal to it."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((30, 30)))[0][:, :4]
    x = rng.standard_normal((500, 4)) @ basis.T
    g = scatter(x)
    u = rng.standard_normal((4, 30))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    lam = np.trace(g) / 30  # the score's λ: the mean variance per axis
    want = np.einsum("md,md->m", u, (g @ np.linalg.solve(g + lam * np.eye(30), u.T)).T)
    np.testing.assert_allclose(coverage(coverage_basis(g)[0], u), want, atol=0.02)  # KEEP drops ≤ 0.02
    inside, outside = basis @ rng.standard_normal(4), np.linalg.qr(rng.standard_normal((30, 30)))[0][:, 0]
    outside -= basis @ (basis.T @ outside)
    assert coverage(coverage_basis(g)[0], inside) > 0.85  # variance 7.5x the mean per axis: leverage 0.88
    assert coverage(coverage_basis(g)[0], outside) < 0.02
    # a compact basis (top axes + the dropped axes' mean leverage) on a smooth spectrum: close to exact
    x = rng.standard_normal((2000, 30)) * np.linspace(2.0, 0.2, 30)
    g = scatter(x)
    exact = coverage(coverage_basis(g)[0], u)
    b, rest = coverage_basis(g, max_axes=20)
    assert b.shape == (20, 30) and 0 < rest < 1
    np.testing.assert_allclose(coverage(b, u, rest), exact, atol=0.08)  # ≤ spread of dropped leverages


def test_mixture_carries_an_unseen_kind_and_coverage_says_when_it_cannot(world):
    """A held-out A/B behaviour: the styles-only map misses it (low cosine, low coverage); the mixture
    fitted without that behaviour carries it where W sends it (high cosine, high coverage)."""
    ab = [p for p in load_pairs("ab")]
    held = "ai_coordination"
    styles_only = fit_map(world["styles"], "A", "B", layers=1, **QUIET)
    mixture = fit_map([world["styles"], world["ab"]], "A", "B", layers=1, exclude_traits=[held], **QUIET)
    rng = np.random.default_rng(5)
    v = world["s2"] @ rng.standard_normal(HALF)  # a direction inside the A/B subspace
    want = v @ world["w"]
    lo, hi = carry(styles_only, v, layer=1, strength="unit"), carry(mixture, v, layer=1, strength="unit")
    assert _cos(hi.directions[1], want) > 0.95 > 0.5 > _cos(lo.directions[1], want)
    assert hi.coverage[1] > 0.75 and lo.coverage[1] < 0.2
    assert lo.low_coverage() == {1: lo.coverage[1]} and not hi.low_coverage()
    with pytest.raises(CoverageError, match="coverage below 0.5 at 1 target layer"):
        carry(styles_only, v, layer=1, strength="unit", strict=True)
    rec = mixture.maps[1].header["data"]
    assert [s["excluded_traits"] for s in rec["sources"]] == [[held], [held]] and held not in rec["traits"]
    by_source = mixture.maps[1].header["quality"]["by_source"]  # held-out rows: styles (the A/B rows are all train)
    assert {Path(k).name for k in by_source} == {"styles"} and next(iter(by_source.values()))["trait_cosine"] > 0.95
    assert len(ab) == 480


def test_weights_are_shares_of_the_rows(world, tmp_path):
    """A source's weight is its share of the fit whatever its row count: weight 0-ish styles is the
    A/B-only map; the map set records the weights and both data hashes."""
    only_ab = fit_map([world["ab"]], "A", "B", layers=1, weights=[1.0], **QUIET)
    tiny_styles = fit_map([world["styles"], world["ab"]], "A", "B", layers=1, weights=[1e-9, 1.0], **QUIET)
    np.testing.assert_allclose(tiny_styles.maps[1].map.weight, only_ab.maps[1].map.weight, atol=1e-4)
    ms = fit_map([world["styles"], world["ab"]], "A", "B", layers=1, weights=[2, 1], out=tmp_path / "m", **QUIET)
    loaded = load_map_set(tmp_path / "m")
    assert [s["weight"] for s in loaded.maps[1].header["data"]["sources"]] == [2.0, 1.0]
    assert loaded.digest() == ms.digest()
    assert np.array_equal(loaded.maps[1].coverage_basis, ms.maps[1].coverage_basis)
    compact = fit_map([world["styles"], world["ab"]], "A", "B", layers=1, coverage_axes=4, **QUIET)
    assert compact.maps[1].coverage_basis.shape == (4, D_S) and compact.maps[1].coverage_rest > 0
    with pytest.raises(ValueError, match="weight"):
        fit_map([world["styles"], world["ab"]], "A", "B", layers=1, weights=[1, -1], **QUIET)
    with pytest.raises(ValueError, match="in none of the sources"):
        fit_map([world["styles"], world["ab"]], "A", "B", layers=1, exclude_traits=["nosuch"], **QUIET)
    with pytest.raises(ValueError, match="affine"):
        fit_map([world["styles"], world["ab"]], "A", "B", method="procrustes", layers=1, **QUIET)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stf_jax.transfer", *map(str, args)], capture_output=True, text=True)


def _corpus_run(root: Path, w, same_tokens: bool) -> Path:
    """A corpus run (token states) of models A and B: general text moves every source axis, B = A W + noise;
    with same_tokens=False, B's tokenizer drops each text's last token (rows pair only as text means)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    text = np.repeat(np.arange(40), 6)
    token = np.tile(np.arange(6), 40)
    signal = rng.standard_normal((len(text), D_S)) + rng.standard_normal((40, D_S))[text]
    states = {"A": signal + 0.02 * rng.standard_normal(signal.shape),
              "B": signal @ w + 0.02 * rng.standard_normal((len(text), D_T))}
    keep = {"A": np.ones(len(text), bool), "B": np.ones(len(text), bool) if same_tokens else token < 5}
    root.mkdir(parents=True)
    entries = []
    for name, x in states.items():
        (root / name).mkdir()
        files = {}
        for lay in range(4):
            files[str(lay)] = f"{name}/layer_{lay:03d}.safetensors"
            k = keep[name]
            save_file({"states": x[k].astype(np.float32), "text_index": text[k], "token_index": token[k]},
                      str(root / files[str(lay)]))
        entries.append({"name": name, "slug": name, "d_model": x.shape[1], "n_layers": 3, "layers": [0, 1, 2, 3],
                        "files": files})
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "corpus", "models": entries,
                                                    "source": {"corpus": "planted", "hash": "x", "n_texts": 40}}))
    return root


@pytest.mark.parametrize("same_tokens,pairing", [(True, "token"), (False, "text_mean")])
def test_a_corpus_run_is_a_source(world, tmp_path, same_tokens, pairing):
    """General-text states (the LRT paper's data) move every axis: a map fitted on them with the styles
    carries an A/B-subspace vector where W sends it, and records how the rows were paired."""
    corpus = _corpus_run(tmp_path / "corpus", world["w"], same_tokens)
    ms = fit_map([world["styles"], corpus], "A", "B", layers=1, **QUIET)
    v = world["s2"] @ np.random.default_rng(4).standard_normal(HALF)
    c = carry(ms, v, layer=1, strength="unit")
    assert _cos(c.directions[1], v @ world["w"]) > 0.9 and c.coverage[1] > 0.3  # styles alone: < 0.2
    assert [s["rows"] for s in ms.header["data"]["sources"]] == ["pairs", pairing]
    # read in chunks of 7 rows (two passes) or whole: the same moments and held-out sample
    from stf_jax.transfer.mixture import Source, open_sources

    run = open_sources([Source(corpus)], "A", "B")[0]
    whole = run.stream(1, 1)
    run.chunk_rows = 7
    chunked = run.stream(1, 1)
    for a, b in zip((whole[0].sxx, whole[0].sxy, whole[0].sx, whole[1], whole[2]),
                    (chunked[0].sxx, chunked[0].sxy, chunked[0].sx, chunked[1], chunked[2])):
        np.testing.assert_allclose(a, b, atol=1e-10)
    assert run.n_train == (240 if same_tokens else 40) * 4 // 5 and len(whole[1]) == run.n_rows - run.n_train


def test_cli_mixture_fit_apply_coverage_and_strict(world, tmp_path):
    r = _cli("fit", world["styles"], world["ab"], "--weights", "1", "1", "--source", "A", "--target", "B",
             "--layers", "2", "--no-norms", "--dtype", "float16", "--out", tmp_path / "mix")
    assert r.returncode == 0, r.stderr
    assert "held-out trait cosine: styles" in r.stderr
    r = _cli("fit", world["styles"], "--source", "A", "--target", "B", "--layers", "2", "--no-norms",
             "--out", tmp_path / "styles")
    assert r.returncode == 0, r.stderr
    v = world["s2"] @ np.random.default_rng(3).standard_normal(HALF)
    export_control_vector(tmp_path / "in" / "ab_vec.gguf", {2: v.astype(np.float32)}, model_hint="llama")
    r = _cli("apply", "--map", tmp_path / "styles", tmp_path / "in", "--out", tmp_path / "out1", "--strength", "unit")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "low coverage at target layer(s) L2" in r.stderr
    assert "1 with low coverage at some layer" in r.stdout
    cov = json.loads(load_control_vector(tmp_path / "out1" / "ab_vec.gguf").metadata["stf_jax.coverage"])
    assert set(cov) == {"2"} and cov["2"] < 0.2
    r = _cli("apply", "--map", tmp_path / "styles", tmp_path / "in", "--out", tmp_path / "out2", "--strict",
             "--strength", "unit")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "coverage below 0.5" in r.stderr
    assert not (tmp_path / "out2" / "ab_vec.gguf").exists()
    r = _cli("apply", "--map", tmp_path / "mix", tmp_path / "in", "--out", tmp_path / "out3", "--strict",
             "--strength", "unit")
    assert r.returncode == 0, r.stderr
    out = load_control_vector(tmp_path / "out3" / "ab_vec.gguf")
    assert json.loads(out.metadata["stf_jax.coverage"])["2"] > 0.75
    assert _cos(out.directions[2], v @ world["w"]) > 0.95  # float16 map files still carry it
    r = _cli("apply", "--map", "shipped:nope->none", tmp_path / "in", "--out", tmp_path / "o4")
    assert r.returncode == 2 and "no shipped map set" in r.stderr


def test_kinds_evaluation_separates_recipes_and_coverage_predicts(world, tmp_path):
    res = kinds_report({"styles": str(world["styles"]), "ab": str(world["ab"])}, ["A", "B"], tmp_path, eval_only=(),
                       recipes={"styles": ("styles",), "mixture": ("styles", "ab")}, layers=1, log=lambda *a: None)
    d = res["directions"]["A->B"]
    assert d["unseen"]["mixture"]["ab"] > 0.9 > 0.5 > d["unseen"]["styles"]["ab"]
    assert d["coverage_spearman_all"] > 0.5
    assert (tmp_path / "kinds.png").stat().st_size > 1000 and "| fitted on |" in (tmp_path / "kinds.md").read_text()
    from stf_jax.report.render import write_report  # the report shows it as one figure

    md, html = write_report(tmp_path, tmp_path / "report")
    text = md.read_text()
    assert "## Transfer by vector kind" in text and "fig-kinds.png" in text and "| fitted on |" in text
    assert (tmp_path / "report" / "figures" / "fig-kinds.png").stat().st_size > 1000


def test_fit_solve_coverage_matches_basis():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((100, 16)), rng.standard_normal((100, 8))
    m = Moments.of(x, y, np.ones(100))
    u = rng.standard_normal((3, 16))
    _, gram = fit_affine_moments(m, 0.1)
    np.testing.assert_allclose(Fit.solve(m, 0.1).coverage(u), coverage(coverage_basis(gram)[0], u), atol=0.02)
    assert abs(spearman([1, 2, 3, 4], [10, 20, 30, 40]) - 1) < 1e-12 and abs(spearman([1, 2, 3], [3, 2, 1]) + 1) < 1e-12


# ---------------------------------------------------------------- shipped data of more kinds


@pytest.mark.parametrize("name,traits,per_trait", [("ab", 8, 60), ("dialogue", 5, 40)])
def test_shipped_kinds_load_validate_and_hold_out(name, traits, per_trait):
    pairs = load_pairs(name)
    by_trait = {}
    for p in pairs:
        by_trait.setdefault(p.trait, []).append(p)
    assert len(by_trait) == traits and all(len(v) == per_trait for v in by_trait.values())
    assert all({p.split for p in v} == {"train", "test"} for v in by_trait.values())
    report = validate_pairs(pairs, min_per_trait=per_trait)
    assert report.ok, report.errors[:3]
    if name == "ab":  # the A/B form: same item, the answer letter differs, matching letter balanced
        assert all(p.positive[:-3] == p.negative[:-3] and {p.positive[-3:], p.negative[-3:]} == {"(A)", "(B)"}
                   for p in pairs)
        for v in by_trait.values():
            assert sum(p.positive.endswith("(A)") for p in v) == per_trait // 2


def test_corpus_pairs_are_deterministic_within_split_and_cut_at_words():
    texts = load_corpus()
    assert len(texts) >= 300 and {t.split for t in texts} == {"train", "test"}
    pairs = corpus_pairs(texts)
    assert pairs == corpus_pairs(load_corpus()) == load_pairs("corpus")
    split_of = {t.id: t.split for t in texts}
    full = {t.id: t.text for t in texts}
    for p in pairs[:200]:
        tid = p.id[len("corpus-"):].rsplit("-", 1)[0]
        assert p.split == split_of[tid] and full[tid].startswith(p.positive) and p.positive != p.negative
        rest = full[tid][len(p.positive):]
        assert rest == "" or rest.startswith(" ")
    test_texts = {t.text for t in texts if t.split == "test"}
    assert all(any(t.startswith(p.negative) for t in test_texts) for p in pairs if p.split == "test")


# ---------------------------------------------------------------- the shipped general map sets

SHIPPED = ("smollm2-135m->gemma3-270m", "gemma3-270m->smollm2-135m")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_map_set_loads_by_name_and_carries_with_coverage(name):
    import stf_jax
    from stf_jax.transfer.mapfile import shipped_map_sets

    assert set(SHIPPED) <= set(shipped_map_sets())
    ms = stf_jax.load_map(f"shipped:{name}")
    src, tgt = name.split("->")
    assert (ms.source["name"], ms.target["name"]) == (src, tgt)
    n_t = ms.target["n_layers"]
    assert sorted(ms.maps) == list(range(2, n_t))  # every steerable target layer
    rec = ms.header["data"]
    assert {Path(s["run"]).name for s in rec["sources"]} == {"styles", "ab", "dialogue", "corpus"}
    assert rec["split"]["deployed_on"] == "train" and len(rec["dataset_hash"]) == 64
    assert all(m.coverage_basis is not None and m.header["source"]["typical_norm"] for m in ms.maps.values())
    rng = np.random.default_rng(0)
    ls = ms.maps[max(ms.maps)].layer_source
    carried = stf_jax.transfer(rng.standard_normal(ms.source["d_model"]).astype(np.float32), f"shipped:{name}",
                               layer=ls)
    assert carried.coverage and all(0.0 <= c <= 1.0 for c in carried.coverage.values())
    assert all(np.isfinite(v).all() and v.shape == (ms.target["d_model"],) for v in carried.directions.values())


def test_shipped_maps_were_fitted_on_the_shipped_data():
    """Each source's recorded dataset hash is the hash of the shipped data as it stands now (edit the data,
    and this fails until `python scripts/fit_shipped_maps.py` refits), and the reserved traits are absent."""
    from stf_jax.data import dataset_hash
    from stf_jax.extract.inputs import read_pairs

    want = {"styles": dataset_hash(read_pairs("shipped", per_trait=60)[0]), "ab": dataset_hash(load_pairs("ab")),
            "dialogue": dataset_hash(load_pairs("dialogue")), "corpus": dataset_hash(load_pairs("corpus"))}
    for name in SHIPPED:
        rec = load_map_set(f"shipped:{name}").header["data"]
        assert {Path(s["run"]).name: s["dataset_hash"] for s in rec["sources"]} == want
        excluded = set(rec["sources"][0]["excluded_traits"])
        assert {"humor", "power_seeking", "honesty", "playfulness"} <= excluded and not excluded & set(rec["traits"])


def test_cli_apply_with_a_shipped_map_writes_coverage(tmp_path):
    ms = load_map_set("shipped:smollm2-135m->gemma3-270m")
    ls = sorted({m.layer_source for m in ms.maps.values()})
    rng = np.random.default_rng(1)
    export_control_vector(tmp_path / "v.gguf", {lay: rng.standard_normal(576).astype(np.float32) for lay in ls},
                          model_hint="llama")
    r = _cli("apply", "--map", "shipped:smollm2-135m->gemma3-270m", tmp_path / "v.gguf", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    out = load_control_vector(tmp_path / "out" / "v.gguf")
    cov = json.loads(out.metadata["stf_jax.coverage"])
    assert sorted(map(int, cov)) == sorted(out.directions) == sorted(ms.maps)
    assert "coverage" in r.stderr


def test_cli_errors_are_one_line(world, tmp_path):
    cases = [
        (["fit", world["styles"], world["ab"], "--weights", "1", "--source", "A", "--target", "B", "--no-norms",
          "--out", tmp_path / "a"], "1 weight(s) for 2 run(s)"),
        (["fit", world["styles"], world["ab"], "--weights", "1", "nan", "--source", "A", "--target", "B",
          "--no-norms", "--out", tmp_path / "b"], "must be a positive number"),
        (["fit", world["styles"], world["ab"], "--exclude-traits", "nosuch", "--source", "A", "--target", "B",
          "--no-norms", "--layers", "1", "--out", tmp_path / "c"], "in none of the sources"),
        (["kinds", "--kind", f"styles={world['styles']}", "--recipe", "x=nope", "--models", "A", "B", "--out",
          tmp_path / "k"], "not given with --kind"),
        (["kinds", "--kind", "styles", "--models", "A", "B", "--out", tmp_path / "k"], "write KIND=VALUE"),
    ]
    for args, message in cases:
        r = _cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, (args, r.stderr)
    assert not any((tmp_path / d).exists() for d in "abc")


# ---------------------------------------------------------------- map sets that stay consistent, outputs never lost


def test_map_sets_are_checked_for_consistency_on_load(world, tmp_path):
    """A map for the reverse direction, or two maps for one target layer, do not load into a set."""
    import shutil

    fwd = fit_map(world["styles"], "A", "B", layers=1, out=tmp_path / "fwd", **QUIET)
    fit_map(world["styles"], "B", "A", layers=2, out=tmp_path / "rev", **QUIET)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "fwd", bad)
    index = json.loads((bad / "mapset.json").read_text())
    rev = json.loads((tmp_path / "rev" / "mapset.json").read_text())["maps"][0]
    shutil.copy(tmp_path / "rev" / rev["file"], bad / rev["file"])
    (bad / "mapset.json").write_text(json.dumps({**index, "maps": index["maps"] + [rev]}))
    with pytest.raises(ValueError, match="another source model"):
        load_map_set(bad)
    index["maps"] = index["maps"] * 2
    (bad / "mapset.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="two maps for target layer 1"):
        load_map_set(bad)
    assert load_map_set(tmp_path / "fwd").digest() == fwd.digest()


def test_no_output_is_overwritten_silently(world, tmp_path):
    lib = tmp_path / "lib"
    v = np.random.default_rng(0).standard_normal(D_S).astype(np.float32)
    export_control_vector(lib / "a.gguf", {2: v}, model_hint="llama")
    np.save(lib / "a.npy", v)
    r = _cli("fit", world["styles"], "--source", "A", "--target", "B", "--layers", "2", "--no-norms",
             "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    r = _cli("apply", "--map", tmp_path / "m", lib, "--layer", "2", "--out", tmp_path / "out", "--strength", "unit")
    assert r.returncode == 2 and "would both be written as" in r.stderr and not (tmp_path / "out").exists()
    before = (tmp_path / "m" / "mapset.json").read_bytes()
    r = _cli("fit", world["styles"], "--source", "A", "--target", "B", "--layers", "1", "--no-norms",
             "--out", tmp_path / "m")
    assert r.returncode == 2 and "already holds a map set" in r.stderr
    assert (tmp_path / "m" / "mapset.json").read_bytes() == before
    r = _cli("fit", world["styles"], "--source", "A", "--target", "B", "--layers", "1", "--no-norms",
             "--out", tmp_path / "m", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(load_map_set(tmp_path / "m").maps) == [1]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["map_L001_to_L001.safetensors", "mapset.json"]
    for flag, value in (("--ridge", "nan"), ("--ridge", "-1"), ("--k", "-3"), ("--test-fraction", "1.5")):
        r = _cli("fit", world["styles"], "--source", "A", "--target", "B", "--layers", "1", "--no-norms",
                 "--out", tmp_path / "n", flag, value)
        assert r.returncode == 2 and "Traceback" not in r.stderr and flag in r.stderr, r.stderr
    assert not (tmp_path / "n").exists()
