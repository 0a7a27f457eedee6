"""`SteeringVector` (core.vector), its files (core.vectorfile) and `train_vector` (extract.vector), checked
against the real repeng 0.4.0 and steering-vectors 0.12.2 packages on a tiny random Llama.

Layer keys: stf_jax's HF layer L is hidden_states[L] = the output of block L-1, which is key L-1 in repeng's
`ControlVector.directions` (its `batched_get_hiddens` reads hidden_states[key + 1]), in steering-vectors'
`layer_activations` (decoder block `key`'s output) and `direction.{L-1}` in GGUF files. One exception, of
transformers' making: hidden_states[n_layers] is the last block's output *after* the final norm, so at the
last block repeng (which reads hidden_states) and steering-vectors (which hooks the block) see different
states; the checks of the steering-vectors key below stop one block short of it.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import stf_jax
from stf_jax.core.vector import DEFAULT_STRENGTH, SteeringVector, VectorMismatchError
from stf_jax.errors import SteeringInputError, UserError

LLAMA = "llama_gqa_untied_rope3"  # 4 blocks, d_model 64: HF layers 0..4, repeng keys 0..3
N_PAIRS = 12


def _repeng():
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, removed in NumPy 2 (test-only shim)
        np.float_ = np.float64
    return pytest.importorskip("repeng")


def _vec(layers=(2, 3, 5), d=16, seed=0, **kw) -> SteeringVector:
    rng = np.random.default_rng(seed)
    return SteeringVector({lay: rng.standard_normal(d).astype(np.float32) for lay in layers}, **kw)


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir(LLAMA))


@pytest.fixture(scope="module")
def model(llama_dir):
    return stf_jax.load_model(llama_dir, progress=False)


@pytest.fixture(scope="module")
def pairs():
    from stf_jax.data import load_pairs

    return load_pairs("shipped", traits=["formality"])[:N_PAIRS]


@pytest.fixture(scope="module")
def hf(llama_dir):
    """transformers' own reading of the same checkpoint: (tokenizer, model), float32."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(llama_dir)
    assert tok.pad_token is not None and tok.padding_side == "right"
    net = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    return tok, net


@pytest.fixture(scope="module")
def trained(model, pairs):
    """{method: train_vector at HF layers 1..4} on the tiny Llama."""
    return {m: stf_jax.train_vector(model, pairs, layers=(1, 2, 3, 4), method=m, trait="formality")
            for m in ("mean_diff", "pca_diff", "pca_center")}


# ------------------------------------------------------------------ 1. conversions with the real packages


def test_repeng_control_vector_both_ways():
    repeng = _repeng()
    v = _vec(model="tiny", model_type="llama")
    cv = v.to_repeng()
    assert isinstance(cv, repeng.ControlVector) and cv.model_type == "llama"
    assert sorted(cv.directions) == [1, 2, 4]  # HF layer - 1
    for lay in v.layers:
        np.testing.assert_array_equal(cv.directions[lay - 1], v.directions[lay])
    back = SteeringVector.from_repeng(cv, model="tiny")
    assert back.layers == v.layers and back.units == "residual" and back.model_type == "llama"
    for lay in v.layers:
        np.testing.assert_array_equal(back.directions[lay], v.directions[lay])
    # a ControlVector made by repeng itself: its key 0 (block 0's output) is HF layer 1
    native = repeng.ControlVector(model_type="llama", directions={0: np.ones(16, np.float32), 3: np.arange(16.0)})
    got = SteeringVector.from_repeng(native)
    assert got.layers == [1, 4] and got.directions[4].dtype == np.float32
    np.testing.assert_array_equal(got.directions[4], np.arange(16.0, dtype=np.float32))
    # repeng's own arithmetic on the converted object agrees with ours
    np.testing.assert_array_equal((cv * 2).directions[1], (v * 2).directions[2])


def test_steering_vectors_both_ways():
    pytest.importorskip("torch")
    sv_pkg = pytest.importorskip("steering_vectors")
    v = _vec()
    sv = v.to_steering_vectors()
    assert isinstance(sv, sv_pkg.SteeringVector) and sv.layer_type == "decoder_block"
    assert sorted(sv.layer_activations) == [1, 2, 4]
    for lay in v.layers:
        np.testing.assert_array_equal(sv.layer_activations[lay - 1].numpy(), v.directions[lay])
    back = SteeringVector.from_steering_vectors(sv, model="tiny", trait="t")
    assert back.layers == v.layers and back.units == "residual" and back.trait == "t"
    for lay in v.layers:
        np.testing.assert_array_equal(back.directions[lay], v.directions[lay])
    import torch

    with pytest.raises(SteeringInputError, match="decoder_block"):
        SteeringVector.from_steering_vectors(sv_pkg.SteeringVector({0: torch.ones(16)}, "mlp"))


def test_steering_vectors_key_is_block_output_hf_layer_minus_one(model, hf):
    """steering-vectors' key i (decoder block i's output, recorded by its own hooks) is stf_jax's HF layer i+1."""
    import torch
    from steering_vectors import record_activations

    tok, net = hf
    texts = ["Dear Sir, I write to enquire", "hey whats up"]
    blocks = [0, 1, 2]  # block 3's output is pre-norm, HF hidden_states[4] post-norm (module doc)
    ids, mask = model.encode(texts)
    ours = np.asarray(model.hidden_states(ids, mask, [b + 1 for b in blocks]))  # [L, B, S, D]
    with torch.no_grad(), record_activations(net, layer_type="decoder_block", layer_nums=blocks) as rec:
        net(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    for j, b in enumerate(blocks):
        theirs = rec[b][0].numpy()
        for row in range(len(texts)):
            n = int(mask[row].sum())
            np.testing.assert_allclose(ours[j, row, :n], theirs[row, :n], rtol=1e-4, atol=1e-4)


def test_repeng_gguf_loads_and_our_gguf_imports_in_repeng(tmp_path):
    repeng = _repeng()
    rng = np.random.default_rng(1)
    cv = repeng.ControlVector(model_type="llama",
                              directions={k: rng.standard_normal(16).astype(np.float32) for k in (1, 2, 4)})
    cv.export_gguf(str(tmp_path / "repeng.gguf"))
    v = SteeringVector.load(tmp_path / "repeng.gguf")
    assert v.layers == [2, 3, 5] and v.units == "residual" and v.model_type == "llama" and v.d_model == 16
    for k, d in cv.directions.items():
        np.testing.assert_array_equal(v.directions[k + 1], d)

    ours = _vec(model="tiny", model_type="llama", trait="t")
    ours.save(tmp_path / "ours.gguf")
    back = repeng.ControlVector.import_gguf(str(tmp_path / "ours.gguf"))
    assert back.model_type == "llama" and sorted(back.directions) == [1, 2, 4]
    for lay in ours.layers:
        np.testing.assert_array_equal(np.asarray(back.directions[lay - 1]), ours.directions[lay])
    again = SteeringVector.load(tmp_path / "ours.gguf")
    assert (again.model, again.trait, again.layers) == ("tiny", "t", ours.layers)
    ours.save(tmp_path / "ours.safetensors")
    st = SteeringVector.load(tmp_path / "ours.safetensors")
    for lay in ours.layers:
        np.testing.assert_array_equal(st.directions[lay], ours.directions[lay])
        np.testing.assert_array_equal(again.directions[lay], ours.directions[lay])


# ------------------------------------------------------------------ 2. arithmetic


def test_arithmetic():
    v = _vec(layers=(2, 3), model="m")
    w = _vec(layers=(3, 4), seed=1, typical_norms={})
    for scaled in (v * 2, 2 * v, v / 0.5):
        assert scaled.layers == v.layers
        for lay in v.layers:
            np.testing.assert_allclose(scaled.directions[lay], 2 * v.directions[lay], rtol=1e-7)
    s = v + w
    assert s.layers == [2, 3, 4] and s.model == "m"
    np.testing.assert_array_equal(s.directions[2], v.directions[2])
    np.testing.assert_array_equal(s.directions[3], v.directions[3] + w.directions[3])
    np.testing.assert_array_equal(s.directions[4], w.directions[4])
    s.directions[4][0] += 1  # the sum owns its arrays
    assert s.directions[4][0] != w.directions[4][0]
    for lay in v.layers:
        np.testing.assert_array_equal((-v).directions[lay], -v.directions[lay])
        np.testing.assert_array_equal((v - v).directions[lay], np.zeros(16, np.float32))
    d = v - w
    np.testing.assert_array_equal(d.directions[4], -w.directions[4])
    np.testing.assert_allclose(list((v * 3).normalized().norms.values()), 1.0, rtol=1e-6)
    np.testing.assert_allclose((v * 3).normalized().directions[2], v.directions[2] / np.linalg.norm(v.directions[2]),
                               rtol=1e-6)
    at = _vec(typical_norms={2: 1.0, 3: 2.0, 5: 3.0}, units="typical_norm").at_layers([5, 2])
    assert at.layers == [2, 5] and at.typical_norms == {2: 1.0, 5: 3.0}
    with pytest.raises(SteeringInputError, match=r"\[4\]"):
        v.at_layers([2, 4])
    assert v.directions[2].dtype == (v * 2).directions[2].dtype == np.float32


@pytest.mark.parametrize("other, what", [
    (_vec(d=8), "d_model"),
    (_vec(model="other"), "'other'"),
    (_vec(model="m", units="typical_norm", typical_norms={2: 1.0, 3: 1.0, 5: 1.0}), "units"),
])
def test_mismatched_vectors_are_refused_in_one_line(other, what):
    v = _vec(model="m")
    for op in (lambda: v + other, lambda: other - v):
        with pytest.raises(VectorMismatchError) as err:
            op()
        assert isinstance(err.value, UserError) and what in str(err.value) and "\n" not in str(err.value)
    v + _vec(seed=3)  # an unknown model combines with a known one


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), True, "2", None])
def test_bad_scaling_is_refused(factor):
    with pytest.raises(SteeringInputError):
        _vec() * factor
    with pytest.raises((SteeringInputError, TypeError)):
        factor * _vec()


def test_non_scalar_operands_are_refused():
    v = _vec()
    with pytest.raises(SteeringInputError):
        v / 0
    with pytest.raises(TypeError):
        v * v
    with pytest.raises(TypeError):
        v + 1


# ------------------------------------------------------------------ 3. units


def test_typical_norm_vector_is_saved_in_residual_units(trained, tmp_path):
    import gguf

    v = trained["mean_diff"].at_layers([2, 3, 4])
    assert v.units == "typical_norm" and sorted(v.typical_norms) == [2, 3, 4]
    np.testing.assert_allclose(list(v.norms.values()), 1.0, rtol=1e-5)
    path = v.save(tmp_path / "tn.gguf")
    reader = gguf.GGUFReader(str(path))  # the file's own numbers, read by gguf itself
    stored = {int(t.name.split(".")[1]) + 1: np.array(t.data, np.float32) for t in reader.tensors}
    assert sorted(stored) == [2, 3, 4]
    for lay in stored:
        want = DEFAULT_STRENGTH * v.typical_norms[lay] * v.directions[lay]
        np.testing.assert_allclose(stored[lay], want, rtol=1e-6)
    back = SteeringVector.load(path)
    assert back.units == "residual" and back.trait == "formality" and back.method == "mean_diff"
    assert back.model == v.model and back.model_type == "llama"
    for lay in stored:
        np.testing.assert_array_equal(back.directions[lay], stored[lay])
        assert back.typical_norms[lay] == pytest.approx(v.typical_norms[lay], rel=1e-5)
    cv = v.to_repeng()  # the same numbers go to repeng and steering-vectors
    for lay in stored:
        np.testing.assert_allclose(cv.directions[lay - 1], stored[lay], rtol=1e-6)
        np.testing.assert_allclose(v.to_steering_vectors().layer_activations[lay - 1].numpy(), stored[lay], rtol=1e-6)
    with pytest.raises(SteeringInputError, match="typical"):
        v.replace(typical_norms={}).save(tmp_path / "no_norms.gguf")


def test_typical_norms_match_transformers(trained, pairs, hf):
    """typical |h| = mean over real tokens after each text's first, on the pairs' texts (transformers' states)."""
    import torch

    tok, net = hf
    texts = [t for p in pairs for t in (p.positive, p.negative)]
    sums, count = np.zeros(5), 0
    with torch.no_grad():
        for text in texts:
            out = net(**tok([text], return_tensors="pt"), output_hidden_states=True)
            for lay in range(1, 5):
                sums[lay] += out.hidden_states[lay][0, 1:].norm(dim=-1).double().sum().item()
            count += out.hidden_states[0].shape[1] - 1
    for lay, got in trained["mean_diff"].typical_norms.items():
        assert got == pytest.approx(sums[lay] / count, rel=1e-4), lay


# ------------------------------------------------------------------ 4. train_vector = the run path


def test_mean_diff_equals_run_trait_vector(model, llama_dir, pairs, trained, tmp_path):
    out = tmp_path / "run"
    stf_jax.extract(llama_dir, pairs, out, layers=(2, 4), batch_size=4, progress=False)
    run_vec = stf_jax.extract.trait_vector(out, llama_dir, "formality", (2, 4))
    v = trained["mean_diff"]
    assert run_vec.layers == [2, 4] and run_vec.units == v.units == "typical_norm"
    assert v.model == model.name and v.trait == "formality" and v.provenance["n_pairs"] == str(N_PAIRS)
    for lay in run_vec.layers:
        np.testing.assert_allclose(v.directions[lay], run_vec.directions[lay], atol=1e-5)


# ------------------------------------------------------------------ 5. pca_* = repeng's read_representations


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
def test_pca_methods_match_repeng(trained, pairs, hf, method):
    repeng = _repeng()
    tok, net = hf
    dataset = [repeng.DatasetEntry(positive=p.positive, negative=p.negative) for p in pairs]
    cv = repeng.ControlVector.train(net, tok, dataset, hidden_layers=[0, 1, 2, 3], batch_size=32, method=method)
    v = trained[method]
    assert sorted(cv.directions) == [lay - 1 for lay in v.layers]
    for key, theirs in cv.directions.items():
        # same sign, and closer than 0.999: on this random model neighbouring layers' directions already have
        # cosine 0.999 (1 - cos >= 2.6e-4), the matching one 1 - 2e-7, so this also pins repeng key = HF layer - 1
        cosines = {lay: _cos(theirs, d) for lay, d in v.directions.items()}
        assert cosines[key + 1] > 0.99999, (method, key, cosines)
        assert max(cosines, key=cosines.get) == key + 1
        np.testing.assert_allclose(np.linalg.norm(v.directions[key + 1]), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
@pytest.mark.parametrize("sides", ["+-==", "+--=", "++-=", "-==="])
def test_pca_sign_rule_matches_repeng(monkeypatch, method, sides):
    """repeng flips the PCA sign only when more pairs have the positive below its negative than above it; ties
    count for neither side, and an undecided vote keeps scikit-learn's PCA sign (largest entry positive).
    `sides`: per pair, the positive above (+), below (-) or equal to (=) its negative along one axis."""
    repeng = _repeng()
    import repeng.extract as rx

    from stf_jax.extract.vector import _direction

    rng = np.random.default_rng(0)
    a = np.array([1.0, -3.0, 0.5, 0.0, 0.2])
    base = rng.standard_normal((len(sides), 5))
    sign = np.array([{"+": 0.5, "-": -0.5, "=": 0.0}[c] for c in sides])
    half = (sign * (1 + np.arange(len(sides))))[:, None] * a  # pair i moved by +-(i+1)/2 a (or not at all)
    pos, neg = (base + half).astype(np.float32), (base - half).astype(np.float32)
    h = np.empty((2 * len(sides), 5), np.float32)
    h[::2], h[1::2] = pos, neg
    monkeypatch.setattr(rx, "batched_get_hiddens", lambda *args, **kw: {0: h.copy()})
    fake_model = types.SimpleNamespace(model=types.SimpleNamespace(layers=[None]))
    entries = [repeng.DatasetEntry(positive="p", negative="n")] * len(sides)
    theirs = rx.read_representations(fake_model, None, entries, hidden_layers=[0], method=method)[0]
    ours = _direction(method, {"positive": pos, "negative": neg})
    assert _cos(theirs, ours) > 0.9999, (theirs, ours)


# ------------------------------------------------------------------ 6. train_vector's inputs


def test_train_vector_inputs(model, llama_dir, pairs, trained, tmp_path):
    tuples = [(p.positive, p.negative) for p in pairs]
    by_path = stf_jax.train_vector(llama_dir, tuples, layers=(1, 2, 3, 4), trait="formality")
    ref = trained["mean_diff"]
    assert by_path.layers == ref.layers and by_path.trait == "formality" and by_path.method == "mean_diff"
    for lay in ref.layers:
        np.testing.assert_allclose(by_path.directions[lay], ref.directions[lay], atol=1e-6)
        assert by_path.typical_norms[lay] == pytest.approx(ref.typical_norms[lay], rel=1e-6)
    custom = stf_jax.train_vector(model, tuples[:3], layers=-1)
    assert custom.layers == [4] and custom.trait == "custom"
    from stf_jax.data import load_pairs, save_pairs

    path = tmp_path / "pairs.jsonl"  # a dataset file, narrowed to the trait
    save_pairs(pairs[:3] + load_pairs("shipped", traits=["verbosity"])[:2], path)
    from_file = stf_jax.train_vector(model, path, layers=2, trait="formality")
    assert from_file.provenance["n_pairs"] == "3" and from_file.trait == "formality"
    np.testing.assert_allclose(from_file.directions[2],
                               stf_jax.train_vector(model, pairs[:3], layers=2).directions[2], atol=1e-6)


def test_train_vector_refusals(model, pairs):
    from stf_jax.extract.vector import TrainVectorError

    tuples = [(p.positive, p.negative) for p in pairs]
    cases = [
        dict(model="no/such/model", pairs=tuples, method="pca"),  # refused before any model is loaded
        dict(model=model, pairs=[]),
        dict(model=model, pairs=tuples[:1], method="pca_center"),
        dict(model=model, pairs=pairs, trait="no_such_trait"),
        dict(model=model, pairs=[("only one",)]),
        dict(model=model, pairs=[("a", 3)]),
    ]
    for kw in cases:
        with pytest.raises(TrainVectorError) as err:
            stf_jax.train_vector(**kw)
        assert isinstance(err.value, UserError) and "\n" not in str(err.value), kw
