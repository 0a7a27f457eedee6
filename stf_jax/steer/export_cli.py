"""`python -m stf_jax.steer export` (wired by stf_jax/steer/__main__.py): any steering vector that
`vectors.load_steering_vector` reads, written as a control vector by `core.vectorfile.write_vector_file`.

The command sits above both modules (vectors reads control vectors through export), so neither imports
the other back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..core.vector import DEFAULT_STRENGTH, stored_strength
from ..errors import SteeringInputError, cli_message
from ..extract.store import model_hint
from ..core.vectorfile import (OPERATIONS, UNKNOWN, direction_name, is_control_vector_file, read_control_vector,
                               vector_metadata, write_vector_file)
from .vectors import load_steering_vector


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """The `export` subcommand on an argparse subparsers object."""
    exp = subparsers.add_parser(
        "export", help="write a steering vector as a llama.cpp control vector (.gguf) or .safetensors",
        description="Write one steering vector as direction.{L-1} for HF layer L, with stf_jax metadata. By "
                    "default its stored length is --strength (0.15) x the layer's typical |h| in the model it is "
                    "for (--target-model, else the run's model), so llama-completion -m MODEL.gguf "
                    "--control-vector-scaled OUT.gguf:1 (and repeng's set_control(v, 1)) steers at stf_jax's "
                    "default strength; the file says so (stf_jax.strength_source). --scale mean-norm stores "
                    "|v| = typical |h| (llama.cpp's S then means S x |h|); --scale unit stores |v| = 1. For a "
                    "strength chosen on held-out pairs and a fluency guard, use `steer calibrate`.")
    exp.add_argument("--vector", required=True,
                     help="a run's <model>/layer_<idx>.safetensors (with --trait), a .npy (with --layer), or an "
                          "exported .gguf/.safetensors")
    exp.add_argument("--trait", help="average only this trait's pair vectors (run layer files)")
    exp.add_argument("--layer", type=int, help="HF hidden-state index [the vector file's layer; required for .npy]")
    exp.add_argument("--out", required=True, help="FILE.gguf (llama.cpp control vector) or FILE.safetensors")
    exp.add_argument("--model-hint", help="HF model_type family, e.g. llama, gemma3 [the run manifest's family]")
    exp.add_argument("--source-model", help="model the vector was extracted from [the run manifest's model]")
    exp.add_argument("--target-model", help="model the vector is for [the source model]")
    exp.add_argument("--method", help="how it was transferred to the target model [native]")
    exp.add_argument("--operation", default="additive", choices=OPERATIONS, help="injection mode [additive]")
    exp.add_argument("--scale", default="auto", choices=["auto", "strength", "mean-norm", "unit", "stored"],
                     help="stored length: --strength x the layer's typical |h| (needs a model: --target-model or "
                          "the run's), the typical |h| itself, 1, or as the input stores it [auto: stored for a "
                          "control-vector file, whose length is its strength; strength for run layer files and "
                          ".npy directions]")
    exp.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                     help=f"--scale strength: the fraction of typical |h| stored [{DEFAULT_STRENGTH}]")
    return exp


def _vector_defaults(path: Path) -> dict[str, str]:
    """model_hint/source_model (and trait etc.) recorded next to or inside the vector file, if any."""
    if is_control_vector_file(path) and path.exists():
        cv = read_control_vector(path)
        keep = ("source_model", "target_model", "transfer_method", "trait", "operation")
        found = {k: cv.metadata[f"stf_jax.{k}"] for k in keep if cv.metadata.get(f"stf_jax.{k}", UNKNOWN) != UNKNOWN}
        return {**found, **({"model_hint": cv.model_hint} if cv.model_hint else {})}
    manifest = path.parent.parent / "manifest.json"
    if path.suffix != ".safetensors" or not manifest.exists():
        return {}
    for entry in json.loads(manifest.read_text()).get("models", []):
        if entry.get("slug") == path.parent.name:
            return {"model_hint": model_hint(entry), "source_model": entry.get("name", "")}
    return {}


def _for_target(name: str, vector: np.ndarray, layer: int, fraction: float | None
                ) -> tuple[str, np.ndarray, dict[str, str]]:
    """Check the vector against the target model (width, layer range); its HF model_type as model_hint;
    with a fraction, the vector scaled to fraction x the layer's typical |h| (recorded in the metadata)."""
    from ..models.loading import load_model

    model = load_model(name)
    cfg = model.config
    if vector.shape[0] != cfg.d_model:
        raise SteeringInputError(f"the vector has {vector.shape[0]} dims but {name} has d_model {cfg.d_model}: "
                                 "transfer it first (python -m stf_jax.transfer apply)")
    if not 1 <= layer <= cfg.n_layers:
        raise SteeringInputError(f"HF layer {layer} is outside {name}'s block outputs 1..{cfg.n_layers}")
    extra = {}
    if fraction is not None:
        from ..core.norms import typical_norms
        from ..data import load_pairs

        texts = [t for p in load_pairs("shipped")[::89] for t in (p.positive, p.negative)]
        h = typical_norms(model, texts, [layer])[layer]
        vector = (vector / np.linalg.norm(vector) * fraction * h).astype(np.float32)
        extra = stored_strength(fraction, {layer: h})
    return cfg.model_type, vector, extra


def run_export(args: argparse.Namespace) -> int:
    """Load the vector (vectors.load_steering_vector), export it, print what was written."""
    try:
        path = Path(args.vector)
        scale = args.scale if args.scale != "auto" else "stored" if is_control_vector_file(path) else "strength"
        vector, layer = load_steering_vector(path, args.trait, layer=args.layer, keep_length=scale == "stored")
        if layer is None:
            raise SteeringInputError(f"{path}: the file records no layer; pass --layer (HF hidden-state index)")
        found = _vector_defaults(path)
        model_hint = args.model_hint or found.get("model_hint")
        if not model_hint:
            raise SteeringInputError(f"{path}: no run manifest records the model family; pass --model-hint "
                             "(the HF model_type, e.g. llama, gemma3)")
        meta = {k: v for k, v in found.items() if k != "model_hint"}
        models = {"source_model": args.source_model, "target_model": args.target_model, "transfer_method": args.method}
        if any(v is not None for v in models.values()):  # the file's target/method described other models
            meta = {k: v for k, v in meta.items() if k not in ("target_model", "transfer_method")}
        given = {**models, "trait": args.trait, "operation": args.operation}
        meta.update({k: v for k, v in given.items() if v is not None})
        vector_metadata({layer: vector}, meta)  # metadata problems first: they need no model
        if not (np.isfinite(args.strength) and 0 < args.strength <= 10):
            raise SteeringInputError(f"--strength must be in (0, 10] (a fraction of typical |h|), got {args.strength}")
        fraction = {"strength": args.strength, "mean-norm": 1.0, "unit": None, "stored": None}[scale]
        model = args.target_model or meta.get("source_model")
        if fraction is not None and model is None:
            if scale == "mean-norm":
                raise SteeringInputError("--scale mean-norm needs --target-model (the model whose |h| sets the length)")
            fraction = None
            print("note: no model to measure the layer's typical |h| (give --target-model): stored at unit length, "
                  "so choose the strength yourself", file=sys.stderr)
        if model is not None and (args.target_model or fraction is not None):
            model_hint, vector, extra = _for_target(model, vector, layer, fraction)
            meta.update(extra)
        if fraction is None and scale != "stored":  # load_steering_vector gave the unit direction
            meta.update(stored_strength(None))
        out = write_vector_file(args.out, {layer: vector}, model_hint=model_hint, metadata=meta)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {cli_message(str(exc))}", file=sys.stderr)
        return 2
    kind = "llama.cpp control vector (GGUF)" if out.suffix == ".gguf" else "safetensors control vector"
    print(f"wrote {out}: {kind}, HF layer {layer} as {direction_name(layer)}, d_model {vector.shape[0]}, "
          f"|v| = {float(np.linalg.norm(vector)):.4f}, model_hint {model_hint}, "
          f"{meta.get('source_model', UNKNOWN)} -> {meta.get('target_model', meta.get('source_model', UNKNOWN))} "
          f"({meta.get('transfer_method', 'native')})")
    return 0
