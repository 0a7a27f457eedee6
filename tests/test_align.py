"""Alignment: PCA, Procrustes and affine maps against NumPy/SciPy references, a planted problem with a known
answer, the protocol's batched paths against direct computation, adapters, the CLI, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.linalg import orthogonal_procrustes

from stf_jax.align import (Adapter, AdapterConfig, AlignInputError, EvalConfig, evaluate, fit_affine, fit_pca,
                           fit_procrustes, fit_procrustes_map, k_for_variance, load_adapter, paired_token_states,
                           save_adapter, train_adapter)
from stf_jax.align import apply_procrustes_map as transfer
from stf_jax.align.__main__ import main as align_main
from stf_jax.align.adapters import orthogonality_penalty
from stf_jax.align.metrics import row_cosines
from stf_jax.align.protocol import (Projected, fit_pcas, fit_pcas_by_complement, held_out_rows, procrustes_pairs,
                                   procrustes_trials, project_trials, train_rows)
from stf_jax.align.synthetic import orthonormal_rows
from stf_jax.testing import make_planted_run, write_run


def _rng(seed=0):
    return np.random.default_rng(seed)


def _random_orthogonal(rng, k):
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


# ------------------------------------------------------------------ references


@pytest.mark.parametrize("solver", ["gram", "svd"])
@pytest.mark.parametrize("n,d", [(300, 24), (20, 40)])
def test_pca_matches_numpy_svd_on_the_weighted_rows(solver, n, d):
    rng = _rng(1)
    x = (rng.standard_normal((n, d)) * np.linspace(4, 0.2, d) + 3.0).astype(np.float32)
    w = np.ones(n, np.float32)
    w[rng.choice(n, n // 5, replace=False)] = 0.0  # rows outside the fit set must not matter
    k = 6
    p = fit_pca(jnp.asarray(x), jnp.asarray(w), k, solver)
    fit_rows = x[w == 1].astype(np.float64)
    mean = fit_rows.mean(0)
    _, sv, vt = np.linalg.svd(fit_rows - mean, full_matrices=False)
    m = len(fit_rows)
    np.testing.assert_allclose(p.mean, mean, atol=1e-5)
    np.testing.assert_allclose(p.variance, sv[:k] ** 2 / (m - 1), rtol=2e-5)
    np.testing.assert_allclose(p.total_variance, (sv ** 2).sum() / (m - 1), rtol=2e-5)
    # axes equal up to sign; the sign convention makes each axis's largest coordinate positive
    comps = np.asarray(p.components)
    np.testing.assert_allclose(np.abs(comps.T @ vt[:k].T), np.eye(k), atol=2e-4)
    assert (comps[np.abs(comps).argmax(0), range(k)] > 0).all()


def test_k_for_variance():
    var = np.array([5.0, 3.0, 1.0, 0.5, 0.5])
    assert k_for_variance(var, 10.0, 0.5) == 1
    assert k_for_variance(var, 10.0, 0.8) == 2
    assert k_for_variance(var, 10.0, 0.9) == 3
    assert k_for_variance(var, 10.0, 1.0) == 5
    with pytest.raises(ValueError):
        k_for_variance(var, 10.0, 1.5)


def test_procrustes_matches_scipy_and_scale_is_the_optimum():
    rng = _rng(2)
    a = rng.standard_normal((200, 7)).astype(np.float32)
    b = (0.6 * a @ _random_orthogonal(rng, 7) + 0.3 * rng.standard_normal((200, 7))).astype(np.float32)
    fit = fit_procrustes(jnp.asarray(a), jnp.asarray(b), jnp.ones(200))
    r_ref, sigma_sum = orthogonal_procrustes(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(fit.rotation, r_ref, atol=2e-5)
    # scipy's `scale` is tr Σ; the optimal similarity scale divides it by ‖A‖²_F
    np.testing.assert_allclose(fit.scale, sigma_sum / (a.astype(np.float64) ** 2).sum(), rtol=1e-5)

    def loss(s, r):
        return ((b - s * a @ r) ** 2).sum()

    best = loss(float(fit.scale), np.asarray(fit.rotation))
    for ds in (-0.01, 0.01):
        assert loss(float(fit.scale) + ds, np.asarray(fit.rotation)) > best


def test_rotation_only_returns_the_best_proper_rotation():
    rng = _rng(3)
    a = rng.standard_normal((100, 5))
    reflect = _random_orthogonal(rng, 5)
    if np.linalg.det(reflect) > 0:
        reflect[:, 0] *= -1  # the planted map is a reflection: the orthogonal optimum has det -1
    b = a @ reflect + 0.05 * rng.standard_normal((100, 5))
    a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    free = fit_procrustes(a32, b32, jnp.ones(100))
    proper = fit_procrustes(a32, b32, jnp.ones(100), rotation_only=True)
    assert np.linalg.det(np.asarray(free.rotation, np.float64)) < 0
    assert np.linalg.det(np.asarray(proper.rotation, np.float64)) == pytest.approx(1.0, abs=1e-4)
    # Kabsch in float64: R = U diag(1, …, 1, det(U Vᵀ)) Vᵀ
    u, _, vt = np.linalg.svd(a.T @ b)
    dfix = np.ones(5)
    dfix[-1] = np.sign(np.linalg.det(u @ vt))
    np.testing.assert_allclose(proper.rotation, (u * dfix) @ vt, atol=1e-4)


def test_affine_matches_lstsq_and_ridge_closed_form():
    rng = _rng(4)
    n, d_s, d_t = 120, 10, 6
    x = rng.standard_normal((n, d_s)).astype(np.float32)
    y = (x @ rng.standard_normal((d_s, d_t)) + 2.0 + 0.1 * rng.standard_normal((n, d_t))).astype(np.float32)
    w = np.ones(n, np.float32)
    w[:20] = 0.0
    m = fit_affine(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))
    xs, ys = x[20:].astype(np.float64), y[20:].astype(np.float64)
    coef = np.linalg.lstsq(np.hstack([xs, np.ones((len(xs), 1))]), ys, rcond=None)[0]
    np.testing.assert_allclose(m.weight, coef[:-1], atol=1e-4)
    np.testing.assert_allclose(m.bias, coef[-1], atol=1e-4)
    ridge = 0.5
    mr = fit_affine(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), ridge=ridge)
    xc, yc = xs - xs.mean(0), ys - ys.mean(0)
    gram = xc.T @ xc
    a_ref = np.linalg.solve(gram + ridge * np.trace(gram) / d_s * np.eye(d_s), xc.T @ yc)
    np.testing.assert_allclose(mr.weight, a_ref, atol=1e-4)


# ------------------------------------------------------------------ planted problem


def _planted_pair(seed=5, n=3000, k=8, d_s=30, d_t=50, s=0.7, noise=0.02):
    """x_t = μ_t + (s·Z R + ε) B_tᵀ, x_s = μ_s + Z B_sᵀ with known bases B (orthonormal columns)."""
    rng = _rng(seed)
    z = rng.standard_normal((n, k)) * np.linspace(3.0, 1.0, k)  # distinct variances
    r = _random_orthogonal(rng, k)
    b_s, b_t = orthonormal_rows(rng, k, d_s).T, orthonormal_rows(rng, k, d_t).T
    mu_s, mu_t = rng.standard_normal(d_s), rng.standard_normal(d_t)
    x_s = mu_s + z @ b_s.T
    x_t = mu_t + (s * z @ r + noise * rng.standard_normal((n, k))) @ b_t.T
    w = (rng.random(n) < 0.8).astype(np.float32)
    truth = dict(r=r, s=s, b_s=b_s, b_t=b_t, mu_s=mu_s, mu_t=mu_t, z=z)
    return x_s.astype(np.float32), x_t.astype(np.float32), w, truth


def test_planted_problem_recovers_rotation_scale_and_test_cosine():
    x_s, x_t, w, truth = _planted_pair()
    k = truth["r"].shape[0]
    xs, xt, wj = jnp.asarray(x_s), jnp.asarray(x_t), jnp.asarray(w)
    m = fit_procrustes_map(fit_pca(xs, wj, k), fit_pca(xt, wj, k), xs, xt, wj)
    assert float(m.procrustes.scale) == pytest.approx(truth["s"], rel=2e-3)
    # the d_s×d_t operator s·W_s R W_tᵀ is basis-free: compare it with the planted s·B_s R B_tᵀ
    op = float(m.procrustes.scale) * np.asarray(m.source.components) @ np.asarray(m.procrustes.rotation) \
        @ np.asarray(m.target.components).T
    op_true = truth["s"] * truth["b_s"] @ truth["r"] @ truth["b_t"].T
    assert np.abs(op - op_true).max() < 3e-3 * np.abs(op_true).max()
    # recovered R in the planted bases
    r_rec = truth["b_s"].T @ np.asarray(m.source.components) @ np.asarray(m.procrustes.rotation) \
        @ np.asarray(m.target.components).T @ truth["b_t"]
    np.testing.assert_allclose(r_rec, truth["r"], atol=3e-3)
    # test cosine equals the oracle map's (noise-limited) cosine
    test = w == 0
    cos = row_cosines(transfer(m, xs[test]), xt[test], jnp.asarray(x_t[w == 1].mean(0)))
    oracle = truth["mu_t"] + truth["s"] * (x_s[test] - truth["mu_s"]) @ truth["b_s"] @ truth["r"] @ truth["b_t"].T
    ocos = (oracle * x_t[test]).sum(1) / np.linalg.norm(oracle, axis=1) / np.linalg.norm(x_t[test], axis=1)
    assert float(cos.raw.mean()) == pytest.approx(float(ocos.mean()), abs=1e-4)
    assert float(cos.centered.mean()) > 0.99


def test_k_space_metrics_equal_explicit_transfer():
    """The protocol scores Procrustes in k dimensions; it must equal forming T(v) in d_t."""
    x_s, x_t, w, _ = _planted_pair(seed=6, n=400, noise=0.5)
    rng = _rng(6)
    w_train = np.stack([w, (rng.random(400) < 0.7).astype(np.float32)])
    w_test = 1.0 - w_train
    perms = np.tile(np.arange(400, dtype=np.int32), (2, 2, 1))
    perms[:, 1] = [rng.permutation(400) for _ in range(2)]  # a scrambled fit: scored on true pairs
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 400)]
    xs, xt = jnp.asarray(x_s), jnp.asarray(x_t)
    rows = train_rows(w_train)
    ps, pt = fit_pcas(xs, rows, 5), fit_pcas(xt, rows, 5)
    res, scale = procrustes_trials(project_trials(ps, xs), project_trials(pt, xt), jnp.asarray(w_train),
                                   jnp.asarray(w_test), jnp.asarray(perms), jnp.asarray(onehot))
    for t in range(2):
        pca_s = type(ps)(*[a[t] for a in ps])
        pca_t = type(pt)(*[a[t] for a in pt])
        for j in range(2):
            perm = perms[t, j]
            m = fit_procrustes_map(pca_s, pca_t, xs[perm], xt, jnp.asarray(w_train[t]))
            cos = row_cosines(transfer(m, xs), xt, pca_t.mean)
            test = w_test[t] == 1
            assert float(res["test"][t, j]) == pytest.approx(float(cos.raw[test].mean()), abs=1e-5)
            assert float(res["test_centered"][t, j]) == pytest.approx(float(cos.centered[test].mean()), abs=1e-5)
            assert float(scale[t, j]) == pytest.approx(float(m.procrustes.scale), rel=1e-5)
            trait0 = test & (onehot[:, 0] == 1)
            assert float(res["per_trait_test"][t, j, 0]) == pytest.approx(float(cos.raw[trait0].mean()), abs=1e-5)


@pytest.mark.parametrize("d,width", [(5, 512), (37, 8), (64, 16)])
def test_symmetric_gram_equals_the_full_product(d, width):
    from stf_jax.align.ops import symmetric_gram

    x = _rng(13).standard_normal((200, d)).astype(np.float32)
    got = np.asarray(symmetric_gram(jnp.asarray(x), width))
    np.testing.assert_allclose(got, x.astype(np.float64).T @ x, rtol=1e-5, atol=1e-4)
    assert np.array_equal(got, got.T)


@pytest.mark.parametrize("kfold", [False, True])
def test_pcas_by_complement_equal_pcas_of_the_training_rows(kfold):
    """All-rows moments minus held-out moments must give each trial's own PCA (random 80/20 splits, and
    K-fold splits where the held-out scatters are summed instead of the total being formed)."""
    rng = _rng(11)
    n, d, k, trials = 500, 24, 6, 5
    x = (rng.standard_normal((n, d)) * np.linspace(4, 0.2, d) + 3.0).astype(np.float32)
    if kfold:
        fold = rng.permutation(np.arange(n) % trials)
        w_train = np.stack([(fold != t) for t in range(trials)]).astype(np.float32)
    else:
        w_train = (rng.random((trials, n)) < 0.8).astype(np.float32)
    held_out, partition = held_out_rows(w_train)
    assert partition == kfold
    got = fit_pcas_by_complement(jnp.asarray(x), held_out, k, partition=partition)
    for t in range(trials):
        rows = x[w_train[t] == 1].astype(np.float64)
        mean = rows.mean(0)
        _, sv, vt = np.linalg.svd(rows - mean, full_matrices=False)
        np.testing.assert_allclose(got.mean[t], mean, atol=1e-5)
        np.testing.assert_allclose(got.variance[t], sv[:k] ** 2 / (len(rows) - 1), rtol=1e-4)
        np.testing.assert_allclose(got.total_variance[t], (sv ** 2).sum() / (len(rows) - 1), rtol=1e-4)
        np.testing.assert_allclose(np.abs(np.asarray(got.components[t]).T @ vt[:k].T), np.eye(k), atol=1e-3)
    direct = fit_pcas(jnp.asarray(x), train_rows(w_train), k)
    np.testing.assert_allclose(got.components, direct.components, atol=1e-3)  # same sign convention


@pytest.mark.parametrize("rotation_only", [False, True])
def test_procrustes_pairs_both_ways_equal_explicit_transfer(rotation_only):
    """One fit per unordered model pair serves both directions: each must equal its own fitted map applied
    in d_t (R_ba = R_abᵀ, s_ba = tr Σ / ‖z_b‖²)."""
    rng = _rng(12)
    n, k, trials = 300, 5, 2
    x_a, x_b, _, _ = _planted_pair(seed=12, n=n, noise=0.5)
    x_c = (x_b @ _random_orthogonal(rng, x_b.shape[1]) + 0.3 * rng.standard_normal(x_b.shape)).astype(np.float32)
    xs = [jnp.asarray(x) for x in (x_a, x_b, x_c)]
    w_train = (rng.random((trials, n)) < 0.7).astype(np.float32)
    w_test = 1.0 - w_train
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    rows = train_rows(w_train)
    pcas = [fit_pcas(x, rows, k) for x in xs]
    proj = Projected(*[jnp.stack(a) for a in zip(*[project_trials(p, x) for p, x in zip(pcas, xs)])])
    pairs = [(0, 1), (0, 2), (1, 2)]
    res, scale = procrustes_pairs(proj, jnp.asarray([a for a, _ in pairs]), jnp.asarray([b for _, b in pairs]),
                                  jnp.asarray(w_train), jnp.asarray(w_test), jnp.asarray(onehot),
                                  rotation_only=rotation_only, batch_size=2)
    assert res["test"].shape == (3, 2, trials)
    for p, (a, b) in enumerate(pairs):
        for direction, (src, tgt) in enumerate([(a, b), (b, a)]):
            for t in range(trials):
                pca_s, pca_t = (type(pcas[m])(*[x[t] for x in pcas[m]]) for m in (src, tgt))
                m = fit_procrustes_map(pca_s, pca_t, xs[src], xs[tgt], jnp.asarray(w_train[t]),
                                       rotation_only=rotation_only)
                cos = row_cosines(transfer(m, xs[src]), xs[tgt], pca_t.mean)
                test, train = w_test[t] == 1, w_train[t] == 1
                got = {key: float(res[key][p, direction, t]) for key in ("test", "test_centered", "train")}
                assert got["test"] == pytest.approx(float(cos.raw[test].mean()), abs=1e-5)
                assert got["test_centered"] == pytest.approx(float(cos.centered[test].mean()), abs=1e-5)
                assert got["train"] == pytest.approx(float(cos.raw[train].mean()), abs=1e-5)
                assert float(scale[p, direction, t]) == pytest.approx(float(m.procrustes.scale), rel=1e-5)


# ------------------------------------------------------------------ adapters


def test_orthogonality_penalty_is_zero_exactly_for_scaled_semi_orthogonal_maps():
    rng = _rng(7)
    q = orthonormal_rows(rng, 6, 9)  # [6, 9], rows orthonormal
    assert float(orthogonality_penalty("linear", {"w": jnp.asarray(3.0 * q)})) < 1e-6
    assert float(orthogonality_penalty("linear", {"w": jnp.asarray(rng.standard_normal((6, 9)))})) > 0.05
    u, v = jnp.asarray(2.0 * q[:3].T), jnp.asarray(orthonormal_rows(rng, 3, 5))
    assert float(orthogonality_penalty("lowrank", {"u": u, "v": v})) < 1e-6


def test_adapter_learns_a_planted_map_and_survives_save_restore(tmp_path):
    x_s, x_t, w, _ = _planted_pair(seed=8, n=1200, d_s=16, d_t=12, k=6, noise=0.05)
    val = (w == 1) & (_rng(8).random(len(w)) < 0.15)
    fit = (w == 1) & ~val
    cfg = AdapterConfig(kind="linear", loss="mse", learning_rate=1e-2, max_steps=600, eval_every=50, batch_size=128)
    res = train_adapter(cfg, jnp.asarray(x_s), jnp.asarray(x_t), jnp.asarray(fit, jnp.float32),
                        jnp.asarray(val, jnp.float32), jnp.asarray(np.array([0, 8], np.uint32)))
    adapter = Adapter(cfg, res.params, res.stats)
    test = w == 0
    cos = row_cosines(adapter(jnp.asarray(x_s[test])), jnp.asarray(x_t[test]), res.stats["y_mean"])
    assert float(cos.centered.mean()) > 0.95
    curve = np.asarray(res.val_curve)
    done = np.isfinite(curve)
    assert done[0] and curve[done][-1] < curve[0]  # it trained
    path = save_adapter(tmp_path / "lin", adapter, extra={"note": "test"})
    back = load_adapter(path)
    assert back.config == cfg
    np.testing.assert_array_equal(np.asarray(back(jnp.asarray(x_s[:5]))), np.asarray(adapter(jnp.asarray(x_s[:5]))))
    assert json.loads((path / "adapter.json").read_text())["note"] == "test"


# ------------------------------------------------------------------ protocol on run directories


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    return make_planted_run(tmp_path_factory.mktemp("run"))


def test_sweep_finds_the_planted_layer_pair_and_hierarchy_holds(planted_run):
    root, _ = planted_run
    cfg = EvalConfig(methods=("procrustes", "affine", "identity", "mean_target", "trait_mean"), k=18, trials=3)
    res = evaluate([root], cfg, sweep=True, source="A", target="B", log=lambda *a: None)
    sweep = res["sweep"]["pairs"]["A->B"]
    assert res["sweep"]["zero_vectors"] == {"A": {"0": len(range(0, len(traits_of(root)), 3))}, "B": {}}
    assert np.isfinite(np.array(sweep["test_centered"])).all()
    assert not any(sweep["eligible"][0]) and all(sweep["eligible"][1])  # A's layer 0 has zero vectors
    assert (sweep["best"]["layer_source"], sweep["best"]["layer_target"]) == (1, 2)
    mat = np.array(sweep["test_centered"])
    others = mat.copy()
    others[1, 2] = -np.inf
    assert mat[1, 2] > others.max() + 0.2
    d = res["directions"][0]
    assert (d["layer_source"], d["layer_target"]) == (1, 2)
    # sweep entry == the full evaluation at that pair (same k, same trials, one batched vs one direct call)
    assert sweep["test_centered"][1][2] == pytest.approx(d["methods"]["procrustes"]["test_centered"]["mean"], abs=1e-5)
    h = {s: d["scrambling"]["procrustes"][s]["test_centered"]["mean"] for s in ("proper", "within_trait", "cross_trait")}
    assert h["proper"] > h["within_trait"] + 0.1 > h["cross_trait"] + 0.1
    assert abs(h["cross_trait"]) < 0.05
    m = d["methods"]
    assert m["procrustes"]["test_centered"]["mean"] > m["trait_mean"]["test_centered"]["mean"]
    assert m["mean_target"]["test_centered"]["mean"] == 0.0
    assert m["mean_target"]["test"]["mean"] > 0.0  # raw cosine credits the mean direction; centered does not


def traits_of(root: Path) -> list[str]:
    return json.loads((root / "manifest.json").read_text())["traits"]


def test_zero_vectors_are_left_out_of_every_side(planted_run):
    root, _ = planted_run
    cfg = EvalConfig(methods=("procrustes", "trait_mean"), k=8, trials=2, scramble=("procrustes",))
    res = evaluate([root], cfg, layer=0, source="A", target="B", log=lambda *a: None)
    n_zero = len(range(0, len(traits_of(root)), 3))
    assert res["excluded_pairs"] == n_zero
    sizes = np.array(res["split_sizes"]["train"]) + np.array(res["split_sizes"]["test"])
    assert (sizes == len(traits_of(root)) - n_zero).all()
    d = res["directions"][0]
    for stat in (d["methods"]["procrustes"]["test"], d["scrambling"]["procrustes"]["within_trait"]["test"]):
        assert np.isfinite(stat["trials"]).all()


def test_cli_writes_results_and_adapters(planted_run, tmp_path):
    root, _ = planted_run
    out = tmp_path / "out"
    rc = align_main([str(root), "--layer", "1", "--methods", "procrustes", "linear", "trait_mean", "--source", "A",
                     "--target", "B", "--variance", "0.9", "--trials", "2", "--max-steps", "100", "--quiet",
                     "--scramble", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    d = res["directions"][0]
    assert (d["layer_source"], d["layer_target"]) == (1, 1)
    assert set(d["methods"]) == {"procrustes", "linear", "trait_mean"}
    assert len(d["methods"]["procrustes"]["test"]["trials"]) == 2 and d["scrambling"] == {}
    assert res["config"]["seeds"] == [0, 1] and res["inputs"]["arrays"]["A@1"]
    assert set(d["methods"]["procrustes"]["per_trait_test"]) == set(res["traits"])
    md = (out / "results.md").read_text()
    assert "A → B" in md and "Per-trait" in md
    adapter = load_adapter(out / d["adapters"]["linear"]["checkpoint"])
    assert adapter.params["w"].shape == (2, 24, 32)  # trials stacked on axis 0
    curves = json.loads((out / d["adapters"]["linear"]["curves"]).read_text())
    assert len(curves["train"]) == 2


def test_bad_inputs_fail_with_clear_errors(planted_run, tmp_path, capsys):
    root, pairs = planted_run
    a = np.asarray(json.loads((root / "manifest.json").read_text())["pair_ids"])
    assert len(a) == len(pairs)
    rng = _rng(9)
    x = rng.standard_normal((len(pairs), 8)).astype(np.float32)
    cfg = EvalConfig(methods=("procrustes",), k=4, trials=1)
    quiet = dict(log=lambda *a: None)

    other = write_run(tmp_path / "fewer", pairs[:-3], {"C": [x[:-3]]})
    with pytest.raises(AlignInputError, match="pair_ids differ"):
        evaluate([root, other], cfg, layer=0, source="A", target="C", **quiet)
    no_trait = [p for p in pairs if p.trait != pairs[0].trait]
    other = write_run(tmp_path / "trait", no_trait, {"C": [x[: len(no_trait)]]})
    with pytest.raises(AlignInputError, match=f"trait.*missing on one side.*{pairs[0].trait}"):
        evaluate([root, other], cfg, layer=0, source="A", target="C", **quiet)
    with pytest.raises(AlignInputError, match=r"k=30 is larger.*d\(A\) = 24, d\(B\) = 32\) = 24"):
        evaluate([root], EvalConfig(methods=("procrustes",), k=30, trials=1), layer=0, **quiet)
    bad = x.copy()
    bad[5, 2] = np.nan
    other = write_run(tmp_path / "nan", pairs, {"C": [bad]})
    with pytest.raises(AlignInputError, match=r"C layer 0 'vectors': 1 row\(s\) contain NaN or Inf"):
        evaluate([root, other], cfg, layer=0, source="A", target="C", **quiet)
    with pytest.raises(AlignInputError, match="layer -9 is out of range for A"):
        evaluate([root], cfg, layer=-9, **quiet)
    # the CLI reports the same errors as one line and exit status 2
    assert align_main([str(root), "--layer", "0", "--k", "500", "--trials", "1", "--methods", "procrustes", "--quiet",
                       "--out", str(tmp_path / "o")]) == 2
    assert "k=500 is larger" in capsys.readouterr().err


def test_paired_token_states(tmp_path):
    rng = _rng(10)
    text_index = np.repeat(np.arange(4), [3, 2, 4, 1])
    token_index = np.concatenate([np.arange(c) for c in [3, 2, 4, 1]])
    root = tmp_path / "corpus"
    for name, d in (("A", 5), ("B", 7)):
        (root / name).mkdir(parents=True)
        save_file({"states": rng.standard_normal((10, d)).astype(np.float32), "text_index": text_index,
                   "token_index": token_index}, str(root / name / "tokens_layer_001.safetensors"))
    (root / "C").mkdir()  # another tokenizer: same 4 texts, 9 tokens
    counts_c = [2, 3, 3, 1]
    save_file({"states": rng.standard_normal((9, 5)).astype(np.float32),
               "text_index": np.repeat(np.arange(4), counts_c),
               "token_index": np.concatenate([np.arange(c) for c in counts_c])},
              str(root / "C" / "tokens_layer_001.safetensors"))
    models = [{"name": m, "slug": m, "d_model": 5, "n_layers": 2, "layers": [1],
               "files": {"1": f"{m}/tokens_layer_001.safetensors"}} for m in "ABC"]
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "corpus", "models": models}))
    xa, xb = paired_token_states(root, "A", "B", 1, 1, pairing="token")
    assert xa.shape == (10, 5) and xb.shape == (10, 7)
    ma, mc = paired_token_states(root, "A", "C", 1, 1, pairing="text_mean")
    assert ma.shape == mc.shape == (4, 5)
    np.testing.assert_allclose(ma[0], xa[:3].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="tokenize the corpus differently"):
        paired_token_states(root, "A", "C", 1, 1, pairing="token")
