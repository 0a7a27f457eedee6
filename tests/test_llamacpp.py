"""llama.cpp itself applies stf_jax's transferred multi-layer control vectors where and as strongly as stf_jax.

The shared map set (conftest `shipped_maps`: 8 traits × 8 pairs, gemma3's layers 11–13 and smollm2's
layers at the same depth, `transfer fit --layers depth`) → smollm2's own formality vector (|v| = typical |h| per
layer) carried to gemma3 with `transfer apply` → `llama-completion --control-vector-scaled FILE:S` on the
shipped Q4_K_M GGUF, greedy, against `stf_jax.steer` generating with the same file and strength.

Quantized (llama.cpp) and dequantized-f32 (stf_jax) weights make the two tools' texts differ slightly even
unsteered, and llama.cpp's kernels differ between CPUs (AVX2, AVX-512, AMX), so the checks hold on any CPU:
llama.cpp's steered text differs from its unsteered text; restricting llama.cpp's layer range to a layer
the file has no direction for gives its unsteered text exactly; and, scored teacher-forced by stf_jax with
the same file and strength, llama.cpp's steered text is favoured by the steering, more than its unsteered
text, which is favoured more than its text steered with the opposite sign (right layer, sign and unit).
"""

from __future__ import annotations

import numpy as np
import pytest

from stf_jax.bench.llamacpp import LlamaCppUnavailable, complete, steering_shift, tool

pytestmark = pytest.mark.slow

PROMPT = "Write a note to your neighbour about the noise:"
STRENGTH = 0.05
N_TOKENS = 16


@pytest.fixture(scope="module")
def carried(shipped_maps, tmp_path_factory):
    from stf_jax.extract.rundir import find_models, load_vectors, pair_table
    from stf_jax.core.vectorfile import write_vector_file as export_control_vector
    from stf_jax.transfer import transfer_files

    try:
        binary = tool("llama-completion")
    except LlamaCppUnavailable as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("llamacpp")
    maps = shipped_maps.maps
    # smollm2's formality vector at the source layers of the set, as a control vector (|v| = typical |h|)
    refs = find_models([shipped_maps.run])
    table, orders = pair_table([refs["smollm2-135m"], refs["gemma3-270m"]])
    rows = np.asarray(table.traits) == "formality"
    dirs = {}
    for lm in maps.maps.values():
        x = load_vectors(refs["smollm2-135m"], lm.layer_source, orders[refs["smollm2-135m"].run_dir])
        v = x[rows].mean(0)
        dirs[lm.layer_source] = (v / np.linalg.norm(v) * lm.header["source"]["typical_norm"]).astype(np.float32)
    src = export_control_vector(root / "formality_smollm2.gguf", dirs, model_hint="llama",
                                metadata={"trait": "formality"})
    (out, result), = transfer_files(maps, [src], root / "carried", log=lambda *a: None)
    return binary, out, result, shipped_maps.model("gemma3-270m")


def _llama(binary, model_path, *extra) -> str:
    return complete(model_path, PROMPT, N_TOKENS, *extra)


def _shift(model, directions, texts) -> np.ndarray:
    return np.asarray(steering_shift(model, directions, STRENGTH, PROMPT, texts))


def test_llamacpp_applies_the_transferred_vector_like_stf_jax(carried):
    """CPU-independent: llama.cpp's greedy words drift with its quantized kernels (AVX2, AVX-512, AMX pick
    different ones), so the check is not the words but where they lead. Scored teacher-forced by stf_jax with
    the same file and strength, llama.cpp's steered text is more likely steered than unsteered, by more than
    its unsteered text or its text steered with the opposite sign; a wrong layer (no effect), sign (the
    order flips) or unit (a strength 1/typical |h| too small changes nothing) fails it."""
    from stf_jax.models.registry import resolve
    from stf_jax.steer.vectors import load_directions

    binary, vector_file, result, model = carried
    assert sorted(result.directions) == [11, 12, 13]
    gguf = resolve("gemma3-270m")
    plain = _llama(binary, gguf)
    steered = _llama(binary, gguf, "--control-vector-scaled", f"{vector_file}:{STRENGTH}")
    opposite = _llama(binary, gguf, "--control-vector-scaled", f"{vector_file}:{-STRENGTH}")
    # layer range 16..16: a block the file has no direction for -> llama.cpp steers nothing
    elsewhere = _llama(binary, gguf, "--control-vector-scaled", f"{vector_file}:{STRENGTH}",
                       "--control-vector-layer-range", 16, 16)
    directions, kind = load_directions(vector_file)
    assert kind == "control_vector" and sorted(directions) == [11, 12, 13]
    shift = _shift(model, directions, [steered, plain, opposite])
    print(f"\nllama.cpp unsteered: {plain!r}\nllama.cpp steered:   {steered!r}\nllama.cpp opposite:  {opposite!r}"
          f"\nllama.cpp elsewhere: {elsewhere!r}\nstf_jax log-prob shift (steered - unsteered) of each: {shift}")
    assert elsewhere == plain
    assert steered != plain and opposite != plain
    # measured (AVX-512 + AMX machine, build-noamx): shifts [+0.77, -0.49, -2.19]; margins leave room for other kernels
    assert shift[0] > 0.2 and shift[0] > shift[1] + 0.2 and shift[1] > shift[2]
