"""One layer-spec grammar at every entry point (stf_jax.extract.layers): the same spec gives the same HF
hidden-state indices, or the same refusal, in extraction, the decoder config, a loaded Model, alignment
(ModelRef) and token-state fitting (paired_token_states).

Expected values are written out by hand for a model with 30 blocks: 31 hidden states, 0 = embeddings,
30 = the last block's (final-normed) output; negatives count from the end as in Python (-1 = 30, -6 = 25);
a relative depth x is round(30 x); a range START:STOP excludes STOP, as a Python slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from stf_jax.align import AlignInputError, paired_token_states
from stf_jax.extract.rundir import ModelRef
from stf_jax.transfer.fit import layer_pairs
from stf_jax.extract import LayerSpecError, parse_layer_spec, resolve_layer, resolve_layers
from stf_jax.models.config import DecoderConfig
from stf_jax.models.model import Model

N = 30
ALL = tuple(range(31))

# spec -> indices in the order asked (the decoder's entry points); extraction sorts and de-duplicates.
ONE_LAYER = [
    (24, (24,)), ("24", (24,)), (-6, (25,)), ("-6", (25,)), (np.int64(-6), (25,)), (-1, (30,)), (-31, (0,)),
    (0, (0,)), (30, (30,)), (0.67, (20,)), ("0.67", (20,)), (0.5, (15,)), ("1.0", (30,)), (0.0, (0,)),
]
MANY_LAYERS = [
    ("all", ALL),
    ("10:20", tuple(range(10, 20))),
    ("-6:", (25, 26, 27, 28, 29, 30)),
    (":3", (0, 1, 2)),
    ("-6,0.67", (25, 20)),
    ((-6, 0.67, 24), (25, 20, 24)),
    ("24, -6, 0.67", (24, 25, 20)),
    ("0.67,20", (20, 20)),
]
REFUSED = [
    (31, "layer 31 is out of range"),
    (-32, "layer -32 is out of range"),
    ("1.5", r"relative depth 1\.5 must lie in \[0, 1\]"),
    ("middle", "is not an index, a relative depth, a range or 'all'"),
    ("nan", "is not an index"),
    (True, "is not an index"),
    ("20:10", "selects no layers"),
    ("10:40", "end 40 is out of range"),
    ("0.2:0.5", "integer ends"),
    ("", "no layers requested"),
]


def _config(n_layers: int = N) -> DecoderConfig:
    return DecoderConfig(family="llama", vocab_size=16, d_model=8, n_layers=n_layers, n_heads=2, n_kv_heads=2,
                         head_dim=4, d_ff=16, norm_eps=1e-6)


def _model() -> Model:
    return Model(config=_config(), params=None, tokenizer=None, dtype=np.float32, name="m")


def _ref(layers=ALL) -> ModelRef:
    return ModelRef(run_dir=None, name="A", slug="a", d_model=8, n_layers=N, layers=tuple(layers))


@pytest.mark.parametrize("spec,expected", [*ONE_LAYER, *MANY_LAYERS], ids=repr)
def test_every_entry_point_resolves_a_spec_alike(spec, expected):
    assert resolve_layers(parse_layer_spec(spec), N) == tuple(sorted(set(expected)))  # extraction
    assert resolve_layers(spec, N) == tuple(sorted(set(expected)))
    assert _config().resolve_layers(spec) == expected
    assert _model().resolve_layers(spec) == expected
    if len(expected) == 1:
        assert resolve_layer(spec, N) == expected[0]
        assert _ref().resolve_layer(spec) == expected[0]
        assert layer_pairs(spec, _ref(), _ref()) == [(expected[0], expected[0])]  # transfer fit --layers
    else:  # one-layer entry points refuse several
        with pytest.raises(LayerSpecError, match=f"names {len(expected)} layers"):
            resolve_layer(spec, N)
        with pytest.raises(AlignInputError, match=f"names {len(expected)} layers of A"):
            _ref().resolve_layer(spec)


@pytest.mark.parametrize("spec,message", REFUSED, ids=repr)
def test_every_entry_point_refuses_a_spec_alike(spec, message):
    with pytest.raises(LayerSpecError, match=message):
        resolve_layers(parse_layer_spec(spec), N)
    for call in (_config().resolve_layers, _model().resolve_layers, lambda s: resolve_layer(s, N)):
        with pytest.raises(LayerSpecError, match=message):
            call(spec)
    with pytest.raises(AlignInputError, match=message):
        _ref().resolve_layer(spec)
    with pytest.raises(AlignInputError, match=message):
        layer_pairs(spec, _ref(), _ref())


def test_messages_name_the_model_the_option_and_the_valid_range():
    with pytest.raises(LayerSpecError, match=r"^layers=: layer 31 is out of range for gemma with 30 blocks: "
                                             r"valid indices are -31\.\.30 \(0 = embeddings, 30 = final-normed"):
        resolve_layers("31", N, model="gemma")
    with pytest.raises(ValueError, match=r"^layer 7 is out of range for a model with 4 blocks: valid indices are "
                                         r"-5\.\.4"):
        _config(4).resolve_layers([7])
    with pytest.raises(AlignInputError, match=r"^layer -32 is out of range for A with 30 blocks"):
        _ref().resolve_layer(-32)


def test_empty_requests():
    assert _config().resolve_layers(()) == () and _config().resolve_layers([]) == ()  # the decoder: no states
    with pytest.raises(LayerSpecError, match="no layers requested"):
        resolve_layers((), N)  # extraction: a request for nothing is a mistake


def test_align_keeps_its_extracted_check():
    ref = _ref(layers=(20, 25))
    assert ref.resolve_layer(-6) == 25 and ref.resolve_layer("0.67") == 20
    with pytest.raises(AlignInputError, match=r"layer 24 \(= 24\) was not extracted for A .* extracted: \[20, 25\]"):
        ref.resolve_layer(24)
    with pytest.raises(AlignInputError, match=r"layer 0\.5 \(= 15\) was not extracted"):
        ref.resolve_layer(0.5)


def test_token_state_fitting_resolves_alike(tmp_path):
    """paired_token_states (a corpus run) reads the layer file the spec names; each file's states hold its layer."""
    files = {}
    for layer in (15, 20, 24, 25):
        files[str(layer)] = f"A/tokens_layer_{layer:03d}.safetensors"
        (tmp_path / "A").mkdir(exist_ok=True)
        save_file({"states": np.full((3, 2), layer, np.float32), "text_index": np.array([0, 0, 1]),
                   "token_index": np.array([0, 1, 0])}, str(tmp_path / files[str(layer)]))
    model = {"name": "A", "slug": "a", "d_model": 2, "n_layers": N, "layers": sorted(map(int, files)),
             "files": files}
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "corpus", "models": [model]}))

    def layer_read(spec):
        xs, xt = paired_token_states(tmp_path, "A", "a", spec, spec)
        assert xs[0, 0] == xt[0, 0]
        return int(xs[0, 0])

    for spec, expected in ONE_LAYER:
        if expected[0] in (15, 20, 24, 25):
            assert layer_read(spec) == expected[0], spec
    with pytest.raises(KeyError, match="layer 30 was not extracted for A"):
        layer_read(-1)
    for spec in (31, "all", "10:20"):
        with pytest.raises(LayerSpecError):
            layer_read(spec)
