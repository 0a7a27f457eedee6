"""The HTTP API: OpenAI-compatible completions with a `steering` field, the vector library, the playground.

    POST /v1/completions        {"prompt": ..., "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
                                 "ignore_eos" (vLLM's and llama-server's: always max_tokens),
                                 "steering": [{"vector": "formality", "strength": 0.8, "scale": "stored"}]}
    POST /v1/chat/completions   {"messages": [...], same fields}      (the model's chat template)
    GET  /v1/models
    GET  /v1/vectors            PUT/GET/DELETE /v1/vectors/{name}     (PUT body: the .gguf/.safetensors file)
    GET  /health  /metrics      GET / (the playground page)

Errors are OpenAI's shape, {"error": {"message", "type", "code"}}, with the HTTP status that fits: 400 bad
input, 401 key, 404 unknown model or vector, 413 too large, 500 a generation that failed (the engine keeps
serving the others). Streaming answers are server-sent events ending in `data: [DONE]`; a client that goes
away mid-stream frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from .engine import Engine, Event, Sampling
from .library import LibraryError, VectorLibrary

MAX_STOP = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _error(status: int, message: str, code: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def create_app(engine: Engine, library: VectorLibrary, api_key: str | None = None, max_body: int = 1 << 20,
               max_upload: int = 64 << 20) -> FastAPI:
    """The ASGI app serving `engine`'s model with `library`'s vectors (run it with uvicorn)."""
    app = FastAPI(title="stf_jax serve", docs_url=None, redoc_url=None, openapi_url=None)
    model_name = engine.model.name
    tokenizer = engine.model.tokenizer

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code)

    @app.exception_handler(LibraryError)
    async def _library_error(request, exc: LibraryError):
        return _error(exc.status, str(exc), {404: "not_found", 413: "too_large"}.get(exc.status, "invalid_request"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.query_params.get("api_key", "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "invalid_api_key")
        return await call_next(request)

    async def body_bytes(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the body is {int(declared)} bytes; the limit is {limit}", "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over the limit of {limit} bytes", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(request: Request) -> dict:
        raw = await body_bytes(request, max_body)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        requested = body.get("model")
        if requested not in (None, "", model_name):
            raise ApiError(404, f"model {requested!r} is not served here; this server serves {model_name!r}",
                           "model_not_found")
        return body

    def sampling(body: dict) -> Sampling:
        def number(key, default, lo, hi, kind=float):
            value = body.get(key, default)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ApiError(400, f"{key} must be a number, not {value!r}")
            if not (lo <= value <= hi):
                raise ApiError(400, f"{key} = {value} is outside [{lo}, {hi}]")
            return kind(value)

        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else stop
        if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, f"stop must be a string or a list of at most {MAX_STOP} strings")
        if body.get("n", 1) != 1:
            raise ApiError(400, "n must be 1 (send one request per completion)")
        seed = body.get("seed")
        if not isinstance(body.get("ignore_eos", False), bool):
            raise ApiError(400, "ignore_eos must be true or false")
        return Sampling(max_tokens=number("max_tokens", 16, 1, engine.context),
                        temperature=number("temperature", 1.0, 0.0, 2.0), top_p=number("top_p", 1.0, 0.0, 1.0),
                        seed=int.from_bytes(os.urandom(4), "little") if seed is None else number("seed", 0, -2**63,
                                                                                                 2**63, int),
                        stop=tuple(stop), ignore_eos=body.get("ignore_eos", False))

    async def run(request: Request, prompt_ids: list[int], body: dict, chat: bool):
        settings = sampling(body)
        steer = await asyncio.to_thread(library.steering, body.get("steering"))  # (may measure |h| once: off the loop)
        problem = engine.check(prompt_ids, settings)
        if problem:
            raise ApiError(400, problem, "context_length_exceeded")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        req = engine.submit(prompt_ids, steer, settings, lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(_stream(events, req, ident, created, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        parts: list[str] = []
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    engine.cancel(req)
                    return JSONResponse({}, status_code=499)
                continue
            if event.kind == "text":
                parts.append(event.text)
            elif event.kind == "error":
                return _error(500, event.text, "generation_failed")
            else:
                text = "".join(parts)
                choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                          else {"index": 0, "text": text, "logprobs": None})
                return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                        "model": model_name, "choices": [{**choice, "finish_reason": event.finish_reason}],
                        "usage": event.usage}

    async def _stream(events, req, ident, created, chat):
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps({'id': ident, 'object': kind, 'created': created, 'model': model_name, 'choices': [choice]})}\n\n"

        try:
            if chat:
                yield chunk(None, None, first=True)
            while True:
                event = await events.get()
                if event.kind == "text":
                    yield chunk(event.text, None)
                elif event.kind == "error":
                    yield f"data: {json.dumps({'error': {'message': event.text, 'type': 'server_error', 'code': 'generation_failed'}})}\n\n"
                    break
                else:
                    yield chunk(None, event.finish_reason)
                    break
            yield "data: [DONE]\n\n"
        finally:
            if not req.finished:
                engine.cancel(req)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await json_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string (or a list of one string)")
        return await run(request, engine.encode(prompt), body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await json_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise ApiError(400, 'messages must be a non-empty list of {"role": ..., "content": "..."} objects')
        if getattr(tokenizer, "chat_template", None) is None:
            raise ApiError(400, f"{model_name} has no chat template; use /v1/completions")
        try:
            text = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                                 tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # the template's own checks (roles must alternate, ...)
            raise ApiError(400, f"the chat template refused the messages: {exc}") from None
        return await run(request, engine.encode(text, add_special_tokens=False), body, chat=True)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "stf_jax",
                                            "d_model": engine.model.config.d_model,
                                            "n_layers": engine.model.config.n_layers, "context": engine.context}]}

    @app.get("/v1/vectors")
    async def vectors():
        return {"object": "list", "data": [library.describe(n) for n in library.names()]}

    @app.get("/v1/vectors/{name}")
    async def vector(name: str):
        return library.describe(name)

    @app.put("/v1/vectors/{name}")
    async def put_vector(name: str, request: Request):
        data = await body_bytes(request, max_upload)
        if not data:
            raise ApiError(400, "the upload is empty: send the .gguf or .safetensors file as the request body")
        return await asyncio.to_thread(library.put, name, data)

    @app.delete("/v1/vectors/{name}")
    async def delete_vector(name: str):
        library.delete(name)
        return {"name": name, "object": "vector", "deleted": True}

    @app.get("/health")
    async def health():
        return {"status": "ok" if engine.ready.is_set() else "warming", "model": model_name}

    @app.get("/metrics")
    async def metrics():
        return {**engine.metrics(), "vectors": len(library.names()), "model": model_name}

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return resources.files(__package__).joinpath("playground.html").read_text(encoding="utf-8")

    return app

