"""The serving engine: a batch mixing unsteered rows, different vectors and opposite signs gives each row
exactly the tokens it gets alone (greedy), on both shipped models and tiny families with sliding windows;
and its tokens equal the batch generator's (`models.generate`, checked against transformers.generate in
test_families) and `steer generate`'s steered completions, an independent path (`make_intervention`)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import stf_jax
from stf_jax.serve.engine import Engine, Event, Sampling, _cut_at_stop, _holdback, prefill_bucket
from stf_jax.testing import build_family_tiny

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,", "def fibonacci(n):",
           "My favourite food is", "Dear Sir or Madam, I am writing to", "The three laws of robotics are"]


def _steering(cfg, rng, layer: int, strength: float) -> np.ndarray:
    """[L, D] steering: a random direction at HF `layer` with length `strength` (zero elsewhere)."""
    table = np.zeros((cfg.n_layers, cfg.d_model), np.float32)
    v = rng.normal(size=cfg.d_model).astype(np.float32)
    table[layer - 1] = v / np.linalg.norm(v) * strength
    return table


def _batch(engine: Engine, jobs, tokens: bool = False):
    """Submit every (prompt_ids, steer, sampling) at once (one batch) and wait for all completions: their
    texts (and generated token ids, with tokens=True)."""
    texts, done = [[] for _ in jobs], [threading.Event() for _ in jobs]
    errors = []

    def listen(i):
        def on(event: Event):
            if event.kind == "text":
                texts[i].append(event.text)
            else:
                if event.kind == "error":
                    errors.append(event.text)
                done[i].set()
        return on

    requests = [engine.submit(ids, steer, sampling, listen(i)) for i, (ids, steer, sampling) in enumerate(jobs)]
    for d in done:
        assert d.wait(300)
    assert not errors
    joined = ["".join(t) for t in texts]
    return (joined, [r.generated for r in requests]) if tokens else joined


def _mixed_equals_alone(model, layer: int, strength: float, max_tokens: int, prompts=PROMPTS):
    """Rows: unsteered, +v1, -v1, +v2, unsteered, -v2 (as many as prompts), in one batch of len(prompts) slots."""
    cfg = model.config
    rng = np.random.default_rng(0)
    v1, v2 = _steering(cfg, rng, layer, strength), _steering(cfg, rng, layer, strength)
    steers = [None, v1, -v1, v2, None, -v2][:len(prompts)]
    engine = Engine(model, slots=len(prompts), context=128).start(warm=False)
    try:
        sampling = Sampling(max_tokens=max_tokens)
        jobs = [(engine.encode(p), s, sampling) for p, s in zip(prompts, steers)]
        alone = [_batch(engine, [job], tokens=True) for job in jobs]
        mixed, mixed_tokens = _batch(engine, jobs, tokens=True)
    finally:
        engine.stop()
    alone_tokens = [a[1][0] for a in alone]
    assert mixed_tokens == alone_tokens and mixed == [a[0][0] for a in alone]
    assert alone_tokens[1] != alone_tokens[0] and alone_tokens[2] != alone_tokens[1], \
        "the steering must change the tokens, or the test shows nothing"
    return [a[0][0] for a in alone], steers


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_mixed_batch_equals_each_request_alone_on_the_shipped_models(name):
    model = stf_jax.load_model(name)
    layer = round(model.config.n_layers * 0.6)
    strength = {"smollm2-135m": 120.0, "gemma3-270m": 2500.0}[name]  # about 0.6 x typical |h| there
    alone, steers = _mixed_equals_alone(model, layer, strength, max_tokens=20)

    # the engine's tokens are the batch generator's, unsteered and steered (an independent injection path)
    from stf_jax.models.generate import generate
    from stf_jax.steer.apply import steered_completions

    assert generate(model, [PROMPTS[0]], max_new_tokens=20)[0] == alone[0]
    for i in (1, 2):
        _, steered, _ = steered_completions(model, [PROMPTS[i]], {layer: steers[i][layer - 1]}, alpha=1.0,
                                            scale="stored", max_new_tokens=20)
        assert steered[0] == alone[i]


@pytest.mark.parametrize("family", ["mistral_window", "gemma3_pattern"])
def test_mixed_batch_equals_alone_across_sliding_windows(tiny_model_dir, family):
    """Tiny random models whose sliding window (37) is crossed while decoding: each slot's window is measured
    from its own length, and the engine's tokens are the batch generator's."""
    model = stf_jax.load_model(tiny_model_dir(family))
    prompts = ["a" * 9 + "bc" * n for n in (3, 9, 14, 5)]  # 15..37 byte tokens: rows at different lengths
    alone, _ = _mixed_equals_alone(model, 2, 40.0, max_tokens=40, prompts=prompts)
    from stf_jax.models.generate import generate

    assert generate(model, [prompts[0]], max_new_tokens=40, stop_tokens=[model.tokenizer.eos_token_id])[0] == alone[0]


@pytest.mark.parametrize("family", ["gpt2", "phi3"])
def test_mixed_batch_equals_alone_on_other_families(tmp_path, family):
    model = stf_jax.load_model(str(build_family_tiny(family, tmp_path / family)))
    _mixed_equals_alone(model, 2, 30.0, max_tokens=24, prompts=["hello there", "a b c d e f g", "xyz" * 5, "q"])


def test_sampling_is_reproducible_per_request_and_batch_independent():
    model = stf_jax.load_model("smollm2-135m")
    engine = Engine(model, slots=3, context=64).start(warm=False)
    try:
        ids = engine.encode("Once upon a time")
        hot = Sampling(max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
        alone = engine.complete(ids, sampling=hot)[0]
        batch = _batch(engine, [(engine.encode("Hello"), None, Sampling(max_tokens=12, temperature=1.0, seed=1)),
                                (ids, None, hot), (engine.encode("x"), None, Sampling(max_tokens=5))])
        other_seed = engine.complete(ids, sampling=Sampling(max_tokens=12, temperature=0.9, top_p=0.95, seed=8))[0]
        text, finish, usage = engine.complete(ids, sampling=Sampling(max_tokens=40, stop=(" the",)))
    finally:
        engine.stop()
    assert batch[1] == alone and other_seed != alone
    assert finish == "stop" and " the" not in text and usage["completion_tokens"] < 40


def test_requests_join_and_leave_at_step_boundaries():
    """Three slots, six requests of different lengths: short ones finish and free their slots while long
    ones run; every request gets its tokens; a cancelled request frees its slot; a request that cannot fit
    the context is refused before it queues."""
    model = stf_jax.load_model("smollm2-135m")
    engine = Engine(model, slots=3, context=64).start(warm=False)
    try:
        jobs = [(engine.encode(p), None, Sampling(max_tokens=n)) for p, n in zip(PROMPTS, (4, 30, 6, 3, 25, 8))]
        alone = [engine.complete(*job)[0] for job in jobs]
        assert _batch(engine, jobs) == alone
        assert engine.metrics()["active_slots"] == 0 and engine.metrics()["completed"] == 12
        with pytest.raises(ValueError, match="context"):
            engine.submit(engine.encode("hi"), None, Sampling(max_tokens=64), lambda e: None)
    finally:
        engine.stop()


def test_stop_string_helpers_and_buckets():
    assert _cut_at_stop("Hello world. Bye", [".", "Bye"]) == ("Hello world", True)
    assert _cut_at_stop("Hello", ["x"]) == ("Hello", False)
    assert _holdback("Hello wor", ["world"]) == "Hello "  # "wor" may become the stop string
    assert _holdback("Hello", ["xyz"]) == "Hello"
    assert [prefill_bucket(n, 100) for n in (1, 16, 17, 40, 90)] == [16, 16, 32, 64, 100]
