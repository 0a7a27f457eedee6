"""Steering vectors from extraction runs, .npy files or exported control vectors: which vector, at which layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from ..errors import SteeringInputError
from ..extract.store import RunDirError, read_manifest
from .export import is_control_vector_file, load_control_vector


def load_steering_vector(path: str | Path, trait: str | None = None,
                         layer: int | None = None) -> tuple[np.ndarray, int | None]:
    """(unit vector [d_model], HF layer index or None).

    path: a run's `<model>/layer_<idx>.safetensors` (the mean of its per-pair unit vectors, over the
    pairs of `trait` when given, then normalised: the seed paper's trait vector), a `.npy` vector, or
    an exported control vector (`.gguf`, or `.safetensors` with direction.* tensors; see
    steer.export). `layer` (HF hidden-state index) picks one of a multi-layer control vector; for a
    run's layer file it must match the file's layer, and a .npy, which records none, gets it.
    """
    path = Path(path)
    if not path.exists():
        raise SteeringInputError(f"{path}: steering vector file not found")
    if is_control_vector_file(path):
        vector, layer = _from_control_vector(path, trait, layer)
    elif path.suffix == ".npy":
        vector = np.load(path).astype(np.float32)
        if trait:
            raise SteeringInputError("--trait selects pairs inside a run's layer file; a .npy holds one vector")
    elif path.suffix == ".safetensors":
        arrays = load_file(str(path))
        if "vectors" not in arrays:
            raise SteeringInputError(f"{path}: no 'vectors' array and no direction.* tensors (expected an extraction "
                             "run's layer file or an exported control vector)")
        with safe_open(str(path), "numpy") as f:
            meta = f.metadata() or {}
        file_layer = int(meta["layer"]) if "layer" in meta else None
        if layer is not None and file_layer is not None and layer != file_layer:
            raise SteeringInputError(f"{path} holds HF layer {file_layer}, not {layer}; use the run's "
                             f"layer_{layer:03d}.safetensors, or drop the layer argument")
        layer = file_layer if file_layer is not None else layer
        rows = arrays["vectors"]
        if trait:
            run_dir = path.parent.parent
            try:
                traits = np.asarray(read_manifest(run_dir)["traits"])
            except RunDirError as e:
                raise SteeringInputError(f"{e}; its manifest is needed to select the pairs of trait {trait!r}") from None
            if trait not in set(traits):
                raise SteeringInputError(f"trait {trait!r} is not in {run_dir}; it has {sorted(set(traits))}")
            rows = rows[traits == trait]
        vector = rows.mean(axis=0)
    else:
        raise SteeringInputError(f"{path}: expected a run's layer_<idx>.safetensors, a .npy vector or an exported "
                         ".gguf/.safetensors control vector")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0:
        raise SteeringInputError(f"{path}: the steering vector is zero or not finite")
    return (vector / norm).astype(np.float32), layer


def _from_control_vector(path: Path, trait: str | None, layer: int | None) -> tuple[np.ndarray, int]:
    """One direction of an exported control vector: the only one, or the one at HF layer `layer`."""
    cv = load_control_vector(path)
    file_trait = cv.metadata.get("stf_jax.trait", "unknown")
    if trait and trait != file_trait:
        raise SteeringInputError(f"{path} holds a vector for trait {file_trait!r}, not {trait!r}; an exported vector "
                         "is already one trait's, so drop --trait or pick that trait's file")
    if layer is None:
        if len(cv.directions) > 1:
            raise SteeringInputError(f"{path} holds directions for HF layers {cv.layers}; pick one with layer= (--layer)")
        layer = cv.layers[0]
    elif layer not in cv.directions:
        raise SteeringInputError(f"{path} has no direction for HF layer {layer} (direction.{layer - 1}); it has HF "
                         f"layers {cv.layers}")
    return cv.directions[layer], layer


def load_directions(path: str | Path, trait: str | None = None,
                    layer: int | None = None) -> tuple[dict[int | None, np.ndarray], str]:
    """({HF layer: vector}, kind) for steering with every layer a file holds.

    kind "control_vector": an exported / llama.cpp / repeng file, every direction as stored (its length is
    its strength, as llama.cpp and repeng use it), or only `layer`; kind "run": a run's layer file, the
    unit trait vector at the file's layer; kind "npy": the vector as stored, at `layer` (None if not given).
    """
    path = Path(path)
    if path.exists() and is_control_vector_file(path):
        if layer is None:
            cv = load_control_vector(path)
            file_trait = cv.metadata.get("stf_jax.trait")
            if trait and file_trait and trait != file_trait:
                raise SteeringInputError(f"{path} holds a vector for trait {file_trait!r}, not {trait!r}; drop --trait")
            return dict(cv.directions), "control_vector"
        v, lay = _from_control_vector(path, trait, layer)
        return {lay: v}, "control_vector"
    if path.suffix == ".npy" and path.exists():
        if trait:
            raise SteeringInputError("--trait selects pairs inside a run's layer file; a .npy holds one vector")
        v = np.load(path, allow_pickle=False).astype(np.float32)
        if v.ndim != 1 or not np.isfinite(v).all() or not v.any():
            raise SteeringInputError(f"{path}: expected one finite, non-zero vector [d_model], got shape {v.shape}")
        return {layer: v}, "npy"
    v, lay = load_steering_vector(path, trait, layer)
    return {lay: v}, "run"
