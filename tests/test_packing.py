"""Packed rows: several texts in one row, kept apart by segment ids, compute what each text computes alone."""

import numpy as np
import pytest

import stf_jax
from stf_jax.extract import ExtractOptions, extract_pairs, load_layer
from stf_jax.extract.batching import PACK_SLOTS, make_packed_batches, pack_rows, tokenize
from stf_jax.testing import TINY, VOCAB, build_family_tiny, shipped_pairs, torch_reference

ROW = 128
LENGTHS = [(50, 30, 20, 9), (61,)]  # row 0: four texts, the first past the sliding windows (37); row 1: one


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    return lambda name: build_family_tiny(name, tmp_path_factory.mktemp(name))


def _packed(rng):
    ids = rng.integers(0, VOCAB, size=(len(LENGTHS), ROW)).astype(np.int32)
    segments = np.zeros_like(ids)
    spans = []
    for r, lengths in enumerate(LENGTHS):
        at = 0
        for k, n in enumerate(lengths):
            segments[r, at:at + n] = k + 1
            spans.append((r, at, n))
            at += n
    return ids, segments, spans


@pytest.mark.parametrize("name", sorted(TINY) + ["gpt2", "gpt_neox"])
def test_packed_texts_equal_each_text_alone_in_pytorch(name, tiny_model_dir, family_dir):
    """Every layer's state of every packed text equals transformers' forward of that text alone: positions
    restart per text, no text sees another, sliding windows and learned positions (GPT-2) included."""
    model_dir = tiny_model_dir(name) if name in TINY else family_dir(name)
    ids, segments, spans = _packed(np.random.default_rng(0))
    states = np.asarray(stf_jax.load_model(model_dir).hidden_states(ids, segments, "all"))  # [L+1, R, ROW, D]
    worst = 0.0
    for r, at, n in spans:
        ref, _ = torch_reference(model_dir, ids[r:r + 1, at:at + n], np.ones((1, n), np.int32))
        ours = states[:, r, at:at + n]
        worst = max(worst, float(np.abs(ours - ref[:, 0]).max() / np.abs(ref).max()))
    print(f"{name}: max rel error {worst:.2e}")
    assert worst <= 1e-4


def test_a_zero_one_mask_is_one_text():
    """A 0/1 mask is the one-text case of segment ids: the same forward, bit for bit, as before packing
    existed (positions from the mask's running count, holes included)."""
    import jax.numpy as jnp

    from stf_jax.models.decoder import _attention_inputs

    mask = np.array([[1, 1, 0, 1, 0], [0, 0, 1, 1, 1]], np.int32)
    positions, shared = _attention_inputs(jnp.asarray(mask), None)
    np.testing.assert_array_equal(positions, np.maximum(np.cumsum(mask, axis=-1) - 1, 0))
    causal = np.tril(np.ones((5, 5), bool))
    np.testing.assert_array_equal(shared["allowed"], causal[None] & mask[:, None, :].astype(bool))


def test_pack_rows_places_every_text_once_within_limits():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, ROW + 1, size=700).tolist() + [1] * 100
    rows = pack_rows(lengths, ROW)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= ROW and len(row) <= PACK_SLOTS for row in rows)
    assert len(rows) <= 1.05 * np.ceil(sum(lengths) / ROW) + 1  # best-fit decreasing: near the lower bound
    assert pack_rows(lengths, ROW) == rows  # deterministic


def test_packed_batches_cover_texts_and_send_long_ones_to_buckets(tiny_model_dir):
    model = stf_jax.load_model(tiny_model_dir("llama_gqa_untied_rope3"))
    rng = np.random.default_rng(1)
    texts = ["x" * int(n) for n in rng.integers(1, 200, size=150)]
    tok = tokenize(model.tokenizer, texts, max_length=256)
    batches = list(make_packed_batches(tok, range(len(texts)), 8, 256, pad_id=0, row_len=64, row_multiple=2))
    seen = []
    for b in batches:
        texts_at = b.rows.reshape(len(b.rows), -1)
        for r, k in zip(*np.nonzero(texts_at >= 0)):
            i = texts_at[r, k]
            n = len(tok.ids[i])
            at = np.nonzero(b.attention_mask[r] == k + 1)[0]
            assert len(at) == n and np.array_equal(b.input_ids[r, at], tok.ids[i])  # contiguous, in order
            assert np.array_equal(at, np.arange(at[0], at[0] + n))
            seen.append(i)
        assert len(b.rows) % 2 == 0
    assert sorted(seen) == list(range(len(texts)))
    packed = [b for b in batches if b.rows.ndim == 2]
    assert {b.input_ids.shape[1] for b in packed} == {64}
    assert sum(b.real_tokens for b in packed) / sum(b.computed_tokens for b in packed) > 0.85
    assert all(len(tok.ids[i]) > 64 for b in batches if b.rows.ndim == 1 for i in b.rows[b.rows >= 0])


@pytest.mark.parametrize("pooling", ["last", "letter", "mean"])
def test_packed_extraction_equals_padded(tiny_model_dir, tmp_path, pooling):
    """Pair vectors with packing (the shorter half of the texts packed, the rest in length buckets) equal the
    padded run's, for every pooling."""
    model_dir = str(tiny_model_dir("gemma3_pattern"))
    pairs = shipped_pairs(per_trait=3, n_traits=4)
    tokenizer = stf_jax.load_model(model_dir).tokenizer
    lengths = [len(ids) for ids in tokenizer([t for p in pairs for t in (p.positive, p.negative)])["input_ids"]]
    row = int(np.median(lengths))  # half the texts packed, half in length buckets
    runs = {}
    for pack in (0, row):
        opts = ExtractOptions(layers="-2,3", pooling=pooling, batch_size=4, pack_length=pack, progress=False)
        extract_pairs([model_dir], pairs, tmp_path / f"p{pack}", opts)
        runs[pack] = {layer: load_layer(tmp_path / f"p{pack}", model_dir, layer) for layer in (3, 7)}
    for layer in (3, 7):
        for key in ("positive", "negative", "vectors"):
            ref = runs[0][layer][key]
            np.testing.assert_allclose(runs[row][layer][key], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", sorted(TINY) + ["gpt2", "gpt_neox"])
def test_last_block_at_pooled_positions_equals_pytorch(name, tiny_model_dir, family_dir):
    """An extraction pooling the last (or letter) token runs its last block at those positions only
    (`Decoder.final_positions`): the pooled states of every packed text, at the deepest and a shallower
    layer, equal transformers' forward of that text alone; a forward of one block (nothing scanned) too."""
    from stf_jax.extract import forward

    model_dir = tiny_model_dir(name) if name in TINY else family_dir(name)
    model = stf_jax.load_model(model_dir)
    n_layers = model.config.n_layers
    ids, segments, spans = _packed(np.random.default_rng(1))
    refs = [torch_reference(model_dir, ids[r:r + 1, at:at + n], np.ones((1, n), np.int32))[0][:, 0]
            for r, at, n in spans]  # [L+1, n, D] per text
    scale = max(float(np.abs(ref).max()) for ref in refs)
    mesh = forward.make_mesh()
    for layers in sorted({(1,), (1, n_layers - 1)}):
        for pooling, back in (("last", 1), ("letter", 2)):
            pooled = np.asarray(forward.PooledForward(model, layers, pooling, mesh, slots=PACK_SLOTS)(ids, segments))
            slot = {}
            for (r, at, n), text_ref in zip(spans, refs):
                slot[r] = slot.get(r, -1) + 1
                ref = text_ref[list(layers), n - back]  # [len(layers), D]
                err = np.abs(pooled[:, r, slot[r]] - ref).max() / scale
                assert err <= 1e-4, (name, layers, pooling, r, at, err)
