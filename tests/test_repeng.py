"""repeng round trip: a control vector trained by repeng itself on smollm2-135m (transformers loads the shipped
GGUF) and written by its `export_gguf` goes through `stf_jax.transfer` to gemma3-270m, and steering gemma3 with
the result raises the trait's propensity on held-out pairs (slope 95 % CI above 0).

repeng trains on pairs that neither the maps nor the evaluation saw (each trait's first 8 pairs fit the shared
maps; formality pairs 8..39 train repeng; 40..55 are scored). repeng's `pca_center` is used: its default
`pca_diff` takes the first principal component of *centered* differences, which drops the mean shift that a
set of uniform contrast pairs like the shipped ones carries (measured: cosine 0.3 to the mean-difference vector
and no steering effect; `pca_center` gives 0.76-0.95). Strengths are repeng coefficients (stored scale):
`transfer apply` keeps them meaningful in the target by preserving |v| relative to each layer's typical |h|.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TRAIN, HELD_OUT = slice(8, 40), slice(40, 56)
ALPHAS = (-8.0, 8.0)  # repeng coefficients; about 3-4 % of |h| at smollm2's layers 18-22


@pytest.fixture(scope="module")
def repeng_file(shipped_maps, tmp_path_factory):
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, removed in NumPy 2 (test-only shim)
        np.float_ = np.float64
    repeng = pytest.importorskip("repeng")
    from stf_jax.testing import transformers_from_gguf
    from stf_jax.data import load_pairs
    from stf_jax.models.registry import resolve

    gguf = Path(resolve("smollm2-135m"))
    tok = transformers_from_gguf(gguf, "tokenizer")
    model = transformers_from_gguf(gguf, "model")
    pairs = load_pairs("shipped", traits=["formality"])[TRAIN]
    dataset = [repeng.DatasetEntry(positive=p.positive, negative=p.negative) for p in pairs]
    blocks = [lm.layer_source - 1 for lm in shipped_maps.maps.maps.values()]  # repeng ids are block indices
    vector = repeng.ControlVector.train(model, tok, dataset, hidden_layers=blocks, batch_size=16,
                                        method="pca_center")
    path = tmp_path_factory.mktemp("repeng") / "formality_smollm2_repeng.gguf"
    vector.export_gguf(str(path))
    return path


def test_repeng_vector_carried_to_gemma3_steers_it(shipped_maps, repeng_file, tmp_path):
    from stf_jax.data import load_pairs
    from stf_jax.steer.apply import steered_propensity
    from stf_jax.steer.vectors import load_directions
    from stf_jax.transfer import transfer_files

    (out, carried), = transfer_files(shipped_maps.maps, [repeng_file], tmp_path, log=lambda *a: None)
    assert sorted(carried.directions) == sorted(shipped_maps.maps.maps)
    directions, kind = load_directions(out)
    assert kind == "control_vector"
    held_out = load_pairs("shipped", traits=["formality"])[HELD_OUT]
    result = steered_propensity(shipped_maps.model("gemma3-270m"), directions, held_out, ALPHAS, n_boot=1000)
    curve, slope = result["curve"]["mean"], result["slope"]
    print(f"\ngemma3 formality propensity at repeng strengths {result['alphas']}: {np.round(curve, 3)}; "
          f"slope {slope['mean']:.4f} [{slope['lo']:.4f}, {slope['hi']:.4f}]")
    assert slope["lo"] > 0, result
    assert curve[0] < curve[1] < curve[2]
