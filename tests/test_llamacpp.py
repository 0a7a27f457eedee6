"""llama.cpp itself applies stf_jax's transferred multi-layer control vectors where and as strongly as stf_jax.

The shared map set (conftest `shipped_maps`: 8 traits × 8 pairs, gemma3's layers 11–13 and smollm2's
layers at the same depth, `transfer fit --layers depth`) → smollm2's own formality vector (|v| = typical |h| per
layer) carried to gemma3 with `transfer apply` → `llama-completion --control-vector-scaled FILE:S` on the
shipped Q4_K_M GGUF, greedy, against `stf_jax.steer` generating with the same file and strength.

Quantized (llama.cpp) and dequantized-f32 (stf_jax) weights make the two tools' texts differ slightly even
unsteered, so the checks are: llama.cpp's steered text differs from its unsteered text; restricting
llama.cpp's layer range to a layer the file has no direction for gives its unsteered text exactly; and
llama.cpp's steered text starts with the same words as stf_jax's steered text (measured: the first 6 of 16
tokens' words), and neither steered text shares a leading word with its tool's unsteered text.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from stf_jax.bench.llamacpp import LlamaCppUnavailable, tool

pytestmark = pytest.mark.slow

PROMPT = "Write a note to your neighbour about the noise:"
STRENGTH = 0.05
N_TOKENS = 16


def _words(text: str) -> list[str]:
    return text.split()


def _common_prefix(a: str, b: str) -> int:
    """Number of leading words the two texts share (greedy decoding: the texts agree until one token differs)."""
    n = 0
    for x, y in zip(_words(a), _words(b)):
        if x != y:
            break
        n += 1
    return n


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
    got = subprocess.run([str(binary), "-m", str(model_path), "-p", PROMPT, "-n", str(N_TOKENS), "--temp", "0",
                          "-no-cnv", "--no-display-prompt", "--no-warmup", "-s", "0", "-t", "2", *map(str, extra)],
                         capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-2000:]
    return got.stdout.strip()


def test_llamacpp_applies_the_transferred_vector_like_stf_jax(carried):
    from stf_jax.models.registry import resolve
    from stf_jax.steer.apply import steered_completions
    from stf_jax.steer.vectors import load_directions

    binary, vector_file, result, model = carried
    assert sorted(result.directions) == [11, 12, 13]
    gguf = resolve("gemma3-270m")
    plain = _llama(binary, gguf)
    steered = _llama(binary, gguf, "--control-vector-scaled", f"{vector_file}:{STRENGTH}")
    # layer range 16..16: a block the file has no direction for -> llama.cpp steers nothing
    elsewhere = _llama(binary, gguf, "--control-vector-scaled", f"{vector_file}:{STRENGTH}",
                       "--control-vector-layer-range", 16, 16)
    directions, kind = load_directions(vector_file)
    assert kind == "control_vector" and sorted(directions) == [11, 12, 13]
    ours_plain, ours, _ = steered_completions(model, [PROMPT], directions, STRENGTH, scale="stored",
                                              max_new_tokens=N_TOKENS)
    print(f"\nllama.cpp unsteered: {plain!r}\nllama.cpp steered:   {steered!r}\nllama.cpp elsewhere: "
          f"{elsewhere!r}\nstf_jax unsteered:   {ours_plain[0]!r}\nstf_jax steered:     {ours[0]!r}")
    assert elsewhere == plain
    assert steered != plain
    # measured: both steered texts start "The noise is caused by the" (6 words), both unsteered "1. What is the
    # noise" and the steered ones share no leading word with them; after that, quantization makes them drift
    agree = _common_prefix(steered, ours[0])
    assert agree >= 4 and agree > _common_prefix(steered, plain) and agree > _common_prefix(ours[0], ours_plain[0])
