"""The HTTP server as clients use it: the README's curl and `openai` examples run as written (against a real
smollm2-135m server), streaming, the vector library (upload, list, delete, kept across a restart, carried
through a map set), and every bad input and fault the issue names, each a JSON error with its status while
the server keeps serving."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import stf_jax
from stf_jax.core.vector import SteeringVector
from stf_jax.serve import BackgroundServer, ServeOptions, build_server
from stf_jax.serve.api import create_app
from stf_jax.serve.library import VectorLibrary

README = Path(__file__).resolve().parents[1] / "README.md"
LAYER = 18  # smollm2-135m: 30 blocks, typical |h| there about 194


def _vector(d_model: int = 576, length: float = 60.0, seed: int = 0, model: str = "smollm2-135m",
            layer: int = LAYER) -> SteeringVector:
    v = np.random.default_rng(seed).normal(size=d_model).astype(np.float32)
    return SteeringVector({layer: v / np.linalg.norm(v) * length}, model=model, trait=f"t{seed}")


@pytest.fixture(scope="module")
def model():
    return stf_jax.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    vectors = tmp_path_factory.mktemp("vectors")
    _vector().save(vectors / "formality.gguf")
    _vector(seed=1).save(vectors / "other.gguf")
    (vectors / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 40)  # skipped at start, with the reason
    app, engine, library = build_server(model, vectors, options=ServeOptions(slots=3, context=160,
                                                                              max_body_kb=64, max_upload_mb=1))
    with BackgroundServer(app) as http:
        assert engine.ready.wait(300)
        yield http.url, engine, library
    engine.stop()


def _post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=120, **kw)


def _readme_blocks(lang: str) -> list[str]:
    serve = README.read_text().split("## Serve", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", serve, re.S)


def test_the_readme_curl_examples_run_as_written(server, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    url, _, library = server
    export = tmp_path / "runs/demo/export/gemma3-270m"
    export.mkdir(parents=True)
    _vector(seed=5).save(export / "formality__native.gguf")  # the file the README uploads (here: for smollm2)
    saved = library.get("formality")
    lines = [ln for block in _readme_blocks("bash") for ln in block.splitlines() if ln.startswith("curl ")]
    assert len(lines) >= 4
    outputs = []
    try:
        for line in lines:
            got = subprocess.run(["bash", "-c", line.replace("http://127.0.0.1:8000", url)], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
            assert got.returncode == 0, got.stderr
            outputs.append(got.stdout)
    finally:
        library.put("formality", open_bytes(saved, tmp_path))  # the other tests' formality vector, restored
    put, listing, completion, stream = (outputs[0], outputs[1], outputs[2], outputs[3])
    assert json.loads(put)["name"] == "formality" and json.loads(put)["layers"] == [LAYER]
    assert "formality" in [v["name"] for v in json.loads(listing)["data"]]
    assert json.loads(completion)["choices"][0]["text"]
    events = [ln[6:] for ln in stream.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert json.loads(outputs[-1])["deleted"] is True


def open_bytes(vector: SteeringVector, tmp_path: Path) -> bytes:
    return vector.save(tmp_path / "restore.gguf").read_bytes()


def test_the_readme_openai_example_runs_and_steering_matches_steer_generate(server, model, capsys):
    """The official `openai` package, steering through extra_body; the steered text is what `steer generate`
    (stf_jax.steer.apply, another injection path) gives with the same file at the same strength."""
    url, _, library = server
    (code,) = [block for block in _readme_blocks("python") if "OpenAI(" in block]
    exec(compile(code.replace("http://127.0.0.1:8000", url), "README", "exec"), {})
    plain, steered = capsys.readouterr().out.rstrip("\n").split(" | ")
    assert plain != steered
    from stf_jax.steer.apply import steered_completions

    v = library.get("formality")
    ref_plain, ref_steered, _ = steered_completions(model, ["Hey, about tomorrow"], v.directions, alpha=1.0,
                                                    scale="stored", max_new_tokens=24)
    assert (plain, steered) == (ref_plain[0], ref_steered[0])


def test_chat_and_streaming_through_the_openai_client(server):
    from openai import OpenAI

    url, _, _ = server
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    kw = dict(model="smollm2-135m", max_tokens=12, temperature=0,
              extra_body={"steering": [{"vector": "formality", "strength": 0.5},
                                       {"vector": "other", "strength": -0.5}]})
    messages = [{"role": "user", "content": "Write one sentence about rain."}]
    whole = client.chat.completions.create(messages=messages, **kw)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(messages=messages, stream=True,
                                                                                        **kw)]
    assert whole.choices[0].message.content and "".join(pieces) == whole.choices[0].message.content
    streamed = "".join(c.choices[0].text for c in client.completions.create(prompt="Rain is", stream=True, **kw))
    assert streamed == client.completions.create(prompt="Rain is", **kw).choices[0].text
    assert whole.usage.completion_tokens <= 12


def test_the_library_uploads_lists_deletes_and_survives_a_restart(server, model, tmp_path):
    url, _, library = server
    data = _vector(seed=3).save(tmp_path / "v.safetensors").read_bytes()
    put = httpx.put(url + "/v1/vectors/mood", content=data, timeout=60)
    assert put.status_code == 200 and put.json()["layers"] == [LAYER]
    assert (library.directory / "mood.safetensors").is_file()
    assert not [p for p in library.directory.iterdir() if p.name.startswith(".")]  # no temporary left
    again = VectorLibrary(library.directory, model)  # a restart reads the directory
    assert "mood" in again.names() and "broken.gguf" in again.skipped
    np.testing.assert_array_equal(again.get("mood").directions[LAYER], library.get("mood").directions[LAYER])
    assert _post(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2,
                                          "steering": [{"vector": "mood", "strength": 1}]}).status_code == 200
    assert httpx.delete(url + "/v1/vectors/mood").json()["deleted"] is True
    assert httpx.get(url + "/v1/vectors/mood").status_code == 404
    assert not (library.directory / "mood.safetensors").exists()


def _gguf(path: Path, directions: dict[int, np.ndarray]) -> bytes:
    """A control-vector GGUF written by the gguf package directly (no checks: NaN and zeros get through)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", len(directions))
    for layer, v in directions.items():
        w.add_tensor(f"direction.{layer - 1}", np.asarray(v, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_bad_input_is_a_json_error_with_its_status(server, tmp_path):
    url, engine, library = server
    before = set(library.names())
    nan = np.full(576, np.nan, np.float32)
    cases = [
        ("unknown vector", lambda: _post(url, "/v1/completions", {"prompt": "x", "steering": [{"vector": "nope"}]}),
         404, "nope"),
        ("unknown model", lambda: _post(url, "/v1/completions", {"prompt": "x", "model": "gpt-4"}), 404, "gpt-4"),
        ("wrong width", lambda: httpx.put(url + "/v1/vectors/w", content=_vector(d_model=64).save(
            tmp_path / "w.gguf").read_bytes()), 400, "width"),
        ("NaN", lambda: httpx.put(url + "/v1/vectors/n", content=_gguf(tmp_path / "n.gguf", {LAYER: nan})), 400,
         "NaN"),
        ("zero", lambda: httpx.put(url + "/v1/vectors/z", content=_gguf(tmp_path / "z.gguf", {LAYER: np.zeros(576, np.float32)})),
         400, "zero"),
        ("bad GGUF", lambda: httpx.put(url + "/v1/vectors/b", content=b"GGUF" + b"\xff" * 64), 400, "the upload"),
        ("not a vector", lambda: httpx.put(url + "/v1/vectors/b", content=b"hello world"), 400, "GGUF"),
        ("bad name", lambda: httpx.put(url + "/v1/vectors/a.b", content=b"GGUF"), 400, "name"),
        ("layer outside", lambda: httpx.put(url + "/v1/vectors/l", content=_vector(layer=31).save(
            tmp_path / "l.gguf").read_bytes()), 400, "outside"),
        ("other model", lambda: httpx.put(url + "/v1/vectors/o", content=_vector(model="gemma3-270m").save(
            tmp_path / "o.gguf").read_bytes()), 400, "--map"),
        ("strength inf", lambda: httpx.post(url + "/v1/completions", content=b'{"prompt": "x", "steering": '
                                            b'[{"vector": "formality", "strength": Infinity}]}'), 400, "finite"),
        ("strength text", lambda: _post(url, "/v1/completions", {"prompt": "x", "steering": [
            {"vector": "formality", "strength": "big"}]}), 400, "strength"),
        ("body too large", lambda: _post(url, "/v1/completions", {"prompt": "x" * 100_000}), 413, "limit"),
        ("upload too large", lambda: httpx.put(url + "/v1/vectors/big", content=b"GGUF" + b"\0" * (2 << 20)), 413,
         "limit"),
        ("not JSON", lambda: httpx.post(url + "/v1/completions", content=b"{nope"), 400, "JSON"),
        ("over the context", lambda: _post(url, "/v1/completions", {"prompt": "word " * 100, "max_tokens": 100}),
         400, "context"),
        ("temperature", lambda: _post(url, "/v1/completions", {"prompt": "x", "temperature": -1}), 400,
         "temperature"),
        ("no messages", lambda: _post(url, "/v1/chat/completions", {"messages": []}), 400, "messages"),
    ]
    for what, call, status, words in cases:
        got = call()
        assert got.status_code == status, (what, got.status_code, got.text)
        error = got.json()["error"]
        assert words in error["message"] and "\n" not in error["message"], (what, error)
    assert set(library.names()) == before
    assert not [p for p in library.directory.iterdir() if p.name.startswith(".")]
    assert _post(url, "/v1/completions", {"prompt": "Still", "max_tokens": 3}).status_code == 200


def test_api_key_guards_every_route(server):
    _, engine, library = server
    app = create_app(engine, library, api_key="s3cret")
    with BackgroundServer(app) as http:
        for path in ("/", "/health", "/metrics", "/v1/models", "/v1/vectors"):
            assert httpx.get(http.url + path).status_code == 401
            assert httpx.get(http.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert httpx.get(http.url + path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(http.url + "/?api_key=s3cret").status_code == 200
        assert httpx.get(http.url + "/v1/models").json()["error"]["code"] == "invalid_api_key"


def test_a_client_leaving_mid_stream_frees_its_slot(server):
    url, engine, _ = server
    body = {"prompt": "Once upon a time, in a land far away,", "max_tokens": 120, "temperature": 0, "stream": True}
    completed = engine.metrics()["completed"]
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            assert line != "data: [DONE]", "the completion ended before the client could leave"
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                break  # one piece read, then the client goes away
    deadline = time.monotonic() + 10
    while engine.metrics()["active_slots"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.metrics()["active_slots"] == 0
    assert engine.metrics()["completed"] == completed  # abandoned, not generated to the end
    assert _post(url, "/v1/completions", {"prompt": "Next", "max_tokens": 3}).status_code == 200


def test_a_failing_generation_is_a_500_and_the_rest_is_served(server, monkeypatch):
    url, engine, _ = server
    tokenizer = engine.model.tokenizer
    original = engine._detokenize

    def faulty(req):
        if "BOOM" in tokenizer.decode(req.prompt_ids):
            raise RuntimeError("injected fault")
        return original(req)

    monkeypatch.setattr(engine, "_detokenize", faulty)
    results = {}

    def call(name, prompt):
        results[name] = _post(url, "/v1/completions", {"prompt": prompt, "max_tokens": 16, "temperature": 0})

    threads = [threading.Thread(target=call, args=(n, p)) for n, p in (("good", "The sky is"), ("bad", "BOOM now"),
                                                                        ("good2", "Water is"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["bad"].status_code == 500 and "injected fault" in results["bad"].json()["error"]["message"]
    assert results["good"].status_code == 200 and results["good2"].status_code == 200
    assert results["good"].json()["usage"]["completion_tokens"] == 16
    metrics = httpx.get(url + "/metrics").json()
    assert metrics["failed"] >= 1 and metrics["active_slots"] == 0 and metrics["latency_p95_s"] > 0


def test_models_health_and_metrics(server):
    url, engine, _ = server
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": "smollm2-135m"}
    model = httpx.get(url + "/v1/models").json()["data"][0]
    assert model["id"] == "smollm2-135m" and model["context"] == 160
    assert {"queue", "active_slots", "tokens_per_s", "latency_p50_s", "latency_p95_s"} <= set(httpx.get(
        url + "/metrics").json())


def test_an_upload_for_another_model_is_carried_through_the_map_set(tmp_path):
    """Started with the shipped map set smollm2-135m -> gemma3-270m, a gemma3 server accepts a smollm2 vector
    (width 576) and keeps the carried gemma3 vector (width 640)."""
    from stf_jax.transfer.mapfile import load_map_set

    maps = load_map_set("shipped:smollm2-135m->gemma3-270m")
    source_layer = maps.layer_pairs()[0][0]
    gemma = stf_jax.load_model("gemma3-270m")
    library = VectorLibrary(tmp_path / "lib", gemma, maps)
    info = library.put("carried", _vector(layer=source_layer).save(tmp_path / "s.gguf").read_bytes())
    assert info["carried_from"] == "smollm2-135m" and info["model"] == "gemma3-270m"
    assert library.get("carried").d_model == 640
    reloaded = VectorLibrary(tmp_path / "lib", gemma)  # the carried file is the target model's vector
    assert reloaded.get("carried").d_model == 640 and reloaded.describe("carried")["carried_from"] == "smollm2-135m"
    assert library.steering([{"vector": "carried", "strength": 1.0}]).shape == (gemma.config.n_layers, 640)

