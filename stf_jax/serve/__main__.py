r"""python -m stf_jax.serve: steered generation over HTTP, OpenAI-compatible, a vector per request.

    python -m stf_jax.serve --model gemma3-270m --vectors vectors/
    open http://127.0.0.1:8000/  (the playground)  or:
    curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' -d '{"prompt": "Dear team,",
         "max_tokens": 32, "temperature": 0, "steering": [{"vector": "formality", "strength": 1}]}'
    curl -s -X PUT --data-binary @formality.gguf http://127.0.0.1:8000/v1/vectors/formality

Steering is an extra body field: a list of {"vector": NAME, "strength": S, "scale": "stored" | "unit" |
"mean-norm"}; the vectors add up. "stored" (default) adds S x the vector as stored, as llama.cpp's
--control-vector-scaled FILE:S does; "mean-norm" adds S x the layer's typical |h| along the vector (0.1-0.3
is noticeable), as `steer generate --scale mean-norm` does. --vectors is the library directory: its
.gguf/.safetensors vectors are served under their file names, and uploads (PUT /v1/vectors/NAME) are kept
there. With --map SOURCE->TARGET map set, a vector made for the source model is carried on upload.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..options import add_fields, fields_from_args

HELPS = {"host": "address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it)", "port": "TCP port",
         "slots": "decode slots: requests generated together (continuous batching)",
         "context": "tokens per slot (prompt + completion)", "dtype": "weights and KV cache dtype",
         "api_key": "require 'Authorization: Bearer KEY' on every route", "max_body_kb": "largest JSON body (KiB)",
         "max_upload_mb": "largest vector upload (MiB)"}


def build_parser() -> argparse.ArgumentParser:
    from .server import ServeOptions

    parser = argparse.ArgumentParser(prog="python -m stf_jax.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registry name (smollm2-135m, gemma3-270m), HF directory "
                                                       "or .gguf path")
    parser.add_argument("--vectors", required=True, help="vector library directory (created if missing)")
    parser.add_argument("--map", help="map set (directory or shipped:SOURCE->TARGET) to carry uploads made for "
                                      "another model")
    add_fields(parser, ServeOptions, HELPS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .server import ServeOptions, run_server

    options = ServeOptions(**fields_from_args(args, [f.name for f in dataclasses.fields(ServeOptions)])).check()
    run_server(args.model, args.vectors, args.map, options)
    return 0


if __name__ == "__main__":
    from ..errors import cli_main

    cli_main(main)
    sys.exit(0)
