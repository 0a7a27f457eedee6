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

from ..errors import SteeringInputError, cli_message
from ..extract.store import model_hint
from ..core.vectorfile import (OPERATIONS, UNKNOWN, direction_name, is_control_vector_file, read_control_vector,
                               vector_metadata, write_vector_file)
from .vectors import load_steering_vector


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """The `export` subcommand on an argparse subparsers object."""
    exp = subparsers.add_parser(
        "export", help="write a steering vector as a llama.cpp control vector (.gguf) or .safetensors",
        description="Write one steering vector (unit norm) as direction.{L-1} for HF layer L, with stf_jax "
                    "metadata. llama.cpp: llama-completion -m MODEL.gguf --control-vector-scaled OUT.gguf:STRENGTH. "
                    "With --scale mean-norm (needs --target-model) the stored vector has the layer's typical |h| as "
                    "its length, so llama.cpp's STRENGTH means STRENGTH x mean |h| (stf_jax's --alpha): 0.1-0.3 "
                    "changes text on the shipped models, about 1 breaks it.")
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
    exp.add_argument("--scale", default="unit", choices=["unit", "mean-norm"],
                     help="stored length: 1, or the target layer's typical |h| (llama.cpp strength S then means "
                          "S x mean |h|; needs --target-model) [unit]")
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


def _for_target(name: str, vector: np.ndarray, layer: int, scale: str) -> tuple[str, np.ndarray, dict[str, str]]:
    """Check the vector against the target model (width, layer range); its HF model_type as model_hint;
    with scale "mean-norm", the vector scaled to the layer's typical |h| (recorded in the metadata)."""
    from ..models.loading import load_model

    model = load_model(name)
    cfg = model.config
    if vector.shape[0] != cfg.d_model:
        raise SteeringInputError(f"the vector has {vector.shape[0]} dims but {name} has d_model {cfg.d_model}: "
                                 "transfer it first (python -m stf_jax.transfer apply)")
    if not 1 <= layer <= cfg.n_layers:
        raise SteeringInputError(f"HF layer {layer} is outside {name}'s block outputs 1..{cfg.n_layers}")
    extra = {}
    if scale == "mean-norm":
        from ..core.norms import typical_norms
        from ..data import load_pairs

        texts = [t for p in load_pairs("shipped")[::89] for t in (p.positive, p.negative)]
        h = typical_norms(model, texts, [layer])[layer]
        vector = (vector / np.linalg.norm(vector) * h).astype(np.float32)
        extra = {"scale": f"mean-norm: |v| = typical |h| = {h:.4f} at this layer (llama.cpp strength S = stf_jax "
                          "alpha S)", "typical_norms": json.dumps({str(layer): h})}
    return cfg.model_type, vector, extra


def run_export(args: argparse.Namespace) -> int:
    """Load the vector (vectors.load_steering_vector), export it, print what was written."""
    try:
        path = Path(args.vector)
        vector, layer = load_steering_vector(path, args.trait, layer=args.layer)
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
        if args.target_model:
            model_hint, vector, extra = _for_target(args.target_model, vector, layer, args.scale)
            meta.update(extra)
        elif args.scale == "mean-norm":
            raise SteeringInputError("--scale mean-norm needs --target-model (the model whose |h| sets the length)")
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
