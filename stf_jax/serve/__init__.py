"""Serve steered generation: an OpenAI-compatible HTTP server with a different steering vector per request.

    python -m stf_jax.serve --model gemma3-270m --vectors vectors/

Pieces, each usable alone: `engine.Engine` (continuous batching over fixed slots, a steering vector per
slot), `library.VectorLibrary` (named vectors in a directory, hot-swapped), `api.create_app` (the HTTP
routes and the playground page), `server.build_server` / `run_server` (all of them together).
"""

from .server import BackgroundServer, ServeOptions, build_server, run_server  # noqa: F401

__all__ = ["BackgroundServer", "ServeOptions", "build_server", "run_server"]
