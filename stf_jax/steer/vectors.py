"""Steering vectors from extraction runs (or .npy files): which vector, at which layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def load_steering_vector(path: str | Path, trait: str | None = None) -> tuple[np.ndarray, int | None]:
    """(unit vector [d_model], HF layer index or None).

    path: a run's `<model>/layer_<idx>.safetensors` (the mean of its per-pair unit vectors, over the
    pairs of `trait` when given, then normalised: the seed paper's trait vector) or a `.npy` vector.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: steering vector file not found")
    if path.suffix == ".npy":
        vector, layer = np.load(path).astype(np.float32), None
        if trait:
            raise ValueError("--trait selects pairs inside a run's layer file; a .npy holds one vector")
    elif path.suffix == ".safetensors":
        arrays = load_file(str(path))
        if "vectors" not in arrays:
            raise ValueError(f"{path}: no 'vectors' array (expected an extraction run's layer file)")
        with safe_open(str(path), "numpy") as f:
            meta = f.metadata() or {}
        layer = int(meta["layer"]) if "layer" in meta else None
        rows = arrays["vectors"]
        if trait:
            manifest = path.parent.parent / "manifest.json"
            if not manifest.exists():
                raise FileNotFoundError(f"{manifest}: needed to select the pairs of trait {trait!r}")
            traits = np.asarray(json.loads(manifest.read_text())["traits"])
            if trait not in set(traits):
                raise ValueError(f"trait {trait!r} is not in {manifest}; it has {sorted(set(traits))}")
            rows = rows[traits == trait]
        vector = rows.mean(axis=0)
    else:
        raise ValueError(f"{path}: expected a run's layer_<idx>.safetensors or a .npy vector")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0:
        raise ValueError(f"{path}: the steering vector is zero or not finite")
    return (vector / norm).astype(np.float32), layer
