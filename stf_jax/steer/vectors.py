"""Which vector to steer with, from a command line's `--vector` (and `stf_jax.steer`'s `vector=`).

A vector file (llama.cpp / repeng / stf_jax .gguf or .safetensors, a .npy with its layer) is read by the one
reader, `SteeringVector.load`; a run's `<model>/layer_<idx>.safetensors` gives the run's trait vector there
(`extract.store.layer_file_vector`). Either way the caller holds a `SteeringVector`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.vector import SteeringVector
from ..core.vectorfile import is_control_vector_file
from ..errors import SteeringInputError


def load_vector(path: str | Path, trait: str | None = None, layer: int | None = None) -> SteeringVector:
    """The SteeringVector `path` names: every direction of a vector file (or only HF `layer`), or a run's
    unit trait vector (of `trait`'s pairs when given) at its layer file's layer."""
    from ..extract.store import RunDirError, layer_file_vector, safetensors_problem

    path = Path(path)
    if not path.exists():
        raise SteeringInputError(f"{path}: steering vector file not found")
    if path.suffix == ".safetensors" and not is_control_vector_file(path):
        problem = safetensors_problem(path) if path.is_file() else "not a file"
        if problem:
            raise SteeringInputError(f"{path}: not a readable control vector or run layer file ({problem})")
        try:
            return layer_file_vector(path, trait, layer)
        except RunDirError as exc:
            raise SteeringInputError(str(exc)) from None
    vector = SteeringVector.load(path, layer)
    if trait:
        if path.suffix == ".npy":
            raise SteeringInputError("trait selects pairs inside a run's layer file; a .npy holds one vector")
        if vector.trait != "unknown" and vector.trait != trait:
            raise SteeringInputError(f"{path} holds a vector for trait {vector.trait!r}, not {trait!r}; an exported "
                                     "vector is already one trait's, so drop the trait or pick that trait's file")
    return vector


def load_steering_vector(path: str | Path, trait: str | None = None, layer: int | None = None,
                         keep_length: bool = False) -> tuple[np.ndarray, int | None]:
    """(unit vector [d_model], HF layer) of a one-layer vector (`load_vector`); a multi-layer file needs
    `layer`. keep_length: the vector as stored (a control vector's length is its strength)."""
    vector = load_vector(path, trait, layer)
    if len(vector.layers) > 1:
        raise SteeringInputError(f"{path} holds directions for HF layers {vector.layers}; pick one with layer=")
    (lay, v), = vector.directions.items()
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise SteeringInputError(f"{path}: the steering vector is zero")
    return np.asarray(v if keep_length else v / norm, np.float32), lay


def vector_kind(path: str | Path, vector: SteeringVector) -> str:
    """"run" (a unit trait vector from a run), "npy" or "control_vector": what `steer generate --scale auto`
    reads a file as."""
    if vector.units == "typical_norm":
        return "run"
    return "npy" if Path(path).suffix == ".npy" else "control_vector"


def load_directions(path: str | Path, trait: str | None = None,
                    layer: int | None = None) -> tuple[dict[int, np.ndarray], str]:
    """({HF layer: vector}, kind) for steering with every layer a file holds (see `vector_kind`)."""
    vector = load_vector(path, trait, layer)
    return dict(vector.directions), vector_kind(path, vector)


def as_vector(vector, layer: int | None = None, trait: str | None = None) -> SteeringVector:
    """A SteeringVector from whatever a caller holds: a SteeringVector, a file (`load_vector`), a
    {HF layer: [d_model]} dict, or one array with its HF `layer` (dicts and arrays: residual units)."""
    if isinstance(vector, SteeringVector):
        return vector.at_layers([layer]) if layer is not None else vector
    if isinstance(vector, (str, Path)):
        return load_vector(vector, trait, layer)
    if isinstance(vector, dict):
        return SteeringVector(dict(vector))
    if hasattr(vector, "directions"):  # an object of the old shapes (ControlVector, Carried)
        return SteeringVector(dict(vector.directions))
    if layer is None:
        raise SteeringInputError("a bare vector needs its HF layer: give layer=")
    return SteeringVector({int(layer): np.asarray(vector)})
