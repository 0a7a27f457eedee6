"""Build and run the server: model, vector library, engine, HTTP app; what `python -m stf_jax.serve` runs.

    from stf_jax.serve import ServeOptions, build_server
    app, engine, library = build_server("gemma3-270m", vectors="vectors/", options=ServeOptions(slots=8))
    # uvicorn.run(app, host="127.0.0.1", port=8000)   or   stf_jax.serve.run_server(...)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger("stf_jax.serve")


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """The server's settings, declared once (flags derive from these fields)."""

    host: str = "127.0.0.1"
    port: int = 8000
    slots: int = 8
    context: int = 512
    dtype: Literal["float32", "bfloat16"] = "float32"
    api_key: str | None = None
    max_body_kb: int = 1024
    max_upload_mb: int = 64

    def check(self) -> "ServeOptions":
        from ..errors import UserError

        problems = [what for bad, what in (
            (not 1 <= self.slots <= 1024, f"--slots {self.slots}: give 1..1024"),
            (not 32 <= self.context <= 1 << 17, f"--context {self.context}: give 32..131072"),
            (not 0 <= self.port <= 65535, f"--port {self.port}: give 0..65535"),
            (self.max_body_kb < 1 or self.max_upload_mb < 1, "the size limits must be >= 1"),
            (self.api_key is not None and not self.api_key.strip(), "--api-key is empty"),
        ) if bad]
        if problems:
            raise UserError("; ".join(problems))
        return self


def require_serve_extra() -> None:
    """FastAPI and uvicorn are the `serve` extra: say how to get them instead of an ImportError."""
    import importlib.util

    from ..errors import UserError

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serving needs {' and '.join(missing)}: pip install 'stf_jax[serve]'")


def build_server(model, vectors: str | Path, map_set=None, options: ServeOptions = ServeOptions(), warm: bool = True):
    """(FastAPI app, started Engine, VectorLibrary). model: a Model or a name/path; vectors: the library
    directory (created if missing; its vectors are loaded); map_set: a MapSet or path/"shipped:A->B" to carry
    uploads made for another model."""
    from ..models.loading import load_model

    require_serve_extra()
    from .api import create_app
    from .engine import Engine
    from .library import VectorLibrary

    options = options.check()
    t0 = time.perf_counter()
    if isinstance(model, (str, Path)):
        model = load_model(str(model), dtype=options.dtype)
    if map_set is not None and not hasattr(map_set, "maps"):
        from ..transfer.mapfile import load_map_set

        map_set = load_map_set(map_set)
    library = VectorLibrary(vectors, model, map_set)
    engine = Engine(model, slots=options.slots, context=options.context).start(warm=warm)
    if warm:  # the mean-norm scale's |h| per layer, measured while the engine compiles rather than on first use
        import threading

        threading.Thread(target=library.typical_norms, name="stf_jax-norms", daemon=True).start()
    app = create_app(engine, library, api_key=options.api_key, max_body=options.max_body_kb << 10,
                     max_upload=options.max_upload_mb << 20)
    log.info("model %s loaded and app built in %.1f s; %d vector(s)", model.name, time.perf_counter() - t0,
             len(library.names()))
    return app, engine, library


def run_server(model, vectors: str | Path, map_set=None, options: ServeOptions = ServeOptions()) -> None:
    """Serve until interrupted (uvicorn, one process: the engine owns the model)."""
    import uvicorn

    app, engine, library = build_server(model, vectors, map_set, options)
    for name, why in library.skipped.items():
        print(f"warning: skipped {name}: {why}")
    print(f"serving {engine.model.name} with {len(library.names())} vector(s) on http://{options.host}:{options.port}/ "
          f"({options.slots} slots, context {options.context})", flush=True)
    try:
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
    finally:
        engine.stop()


class BackgroundServer:
    """An app served by uvicorn on a thread of this process (notebooks, tests): `.url`, `.stop()`.

        with BackgroundServer(app) as server:
            openai.OpenAI(base_url=server.url + "/v1", api_key="-").completions.create(...)
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
        import threading

        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="stf_jax-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
            time.sleep(0.02)
        bound = self._server.servers[0].sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
