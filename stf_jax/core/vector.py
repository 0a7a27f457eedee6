"""`SteeringVector`: the one object a user holds for a steering vector, whatever made it.

    v = stf_jax.train_vector(model, "shipped", trait="formality", layers="0.6:0.9")   # trained here
    w = stf_jax.transfer(v, "shipped:smollm2-135m->gemma3-270m")                       # carried to another model
    u = stf_jax.SteeringVector.load("formality.gguf")                                   # llama.cpp / repeng file
    (w * 2 - u).normalized().at_layers([12, 13]).save("mix.gguf")

Directions are keyed by Hugging Face hidden-state index (HF layer L = output of block L-1, `direction.{L-1}`
in llama.cpp and repeng files, key L-1 in repeng's and steering-vectors' objects).

Units (`units`), which fix what a strength means:
  "residual"      the vector is added as stored (times the strength): llama.cpp's `--control-vector-scaled
                  FILE:s` and repeng's `set_control(v, s)`. Every file written or read is in these units.
  "typical_norm"  the vector is in units of the layer's typical residual norm |h| (`core.norms`): adding
                  strength s adds s * |h|_typ * v. Trained and run vectors are unit vectors in these units,
                  so one strength (`DEFAULT_STRENGTH`) means the same in every model and layer.
`save`, `to_repeng` and `to_steering_vectors` write residual units: a typical-norm vector is scaled by
`DEFAULT_STRENGTH x typical |h|` (recorded in `typical_norms`), so loading the file and steering at strength
1 gives what steering the vector at the default strength gives.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import SteeringInputError
from .vectorfile import HasDirections, VectorMismatchError, checked_directions  # noqa: F401 (re-exported)

UNITS = ("residual", "typical_norm")
COVERAGE_THRESHOLD = 0.5  # below it a carried layer is "low coverage" (transfer.coverage explains the score)
DEFAULT_STRENGTH = 0.15  # x typical |h|: the default of `stf_jax.steer` and `steer generate` for unit vectors
UNKNOWN = "unknown"


def _known(name: str | None) -> bool:
    return bool(name) and name != UNKNOWN


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringVector(HasDirections):
    """Directions {HF layer: [d_model] float32} and what they mean.

    model: the model's name (registry name, HF id or path) or "unknown"; model_type: its HF model_type
    (llama.cpp's model_hint); trait; method: how it was made ("mean_diff", "pca_center", ..., "procrustes"
    ... for a carried vector, "file" when read); units: see the module doc; typical_norms {HF layer: |h|}
    where known; provenance: everything else as str -> str (source model, map set, files, coverage; written
    into saved files as `stf_jax.*` keys); report: a transfer's per-layer account (layer mapping, unmapped
    layers, coverage)."""

    directions: dict[int, np.ndarray]
    model: str = UNKNOWN
    model_type: str = ""
    trait: str = UNKNOWN
    method: str = UNKNOWN
    units: str = "residual"
    typical_norms: dict[int, float] = dataclasses.field(default_factory=dict)
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)
    report: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.units not in UNITS:
            raise SteeringInputError(f"units {self.units!r}: choose from {list(UNITS)}")
        dirs = self.directions.directions if isinstance(self.directions, SteeringVector) else self.directions
        object.__setattr__(self, "directions", checked_directions(dirs))
        object.__setattr__(self, "typical_norms", {int(k): float(v) for k, v in self.typical_norms.items()})

    # ------------------------------------------------------------ what it is

    @property
    def model_hint(self) -> str:
        """The HF model_type family llama.cpp files carry (falls back to the model name)."""
        return self.model_type or (self.model if _known(self.model) else UNKNOWN)

    @property
    def norms(self) -> dict[int, float]:
        return {lay: float(np.linalg.norm(v.astype(np.float64))) for lay, v in self.directions.items()}

    @property
    def metadata(self) -> dict[str, str]:
        """The `stf_jax.*` keys a saved file carries for this vector."""
        meta = {"trait": self.trait, "method": self.method, "source_model": self.model, "target_model": self.model,
                **self.provenance}
        if self.typical_norms:
            meta["typical_norms"] = json.dumps({str(k): round(v, 6) for k, v in sorted(self.typical_norms.items())})
        meta.setdefault("transfer_method", "native")
        return {k: str(v) for k, v in meta.items()}

    @property
    def coverage(self) -> dict[int, float]:
        """{target HF layer: coverage of the input under that layer's map}, for a carried vector (else {})."""
        return {int(k): v for k, v in self.report.get("coverage", {}).items()}

    def low_coverage(self, threshold: float | None = None) -> dict[int, float]:
        """Layers whose coverage is below `threshold` (default COVERAGE_THRESHOLD)."""
        t = COVERAGE_THRESHOLD if threshold is None else threshold
        return {lay: c for lay, c in self.coverage.items() if c < t}

    def __repr__(self) -> str:
        return (f"SteeringVector(trait={self.trait!r}, model={self.model!r}, layers={self.layers}, "
                f"d_model={self.d_model}, units={self.units!r}, method={self.method!r})")

    def replace(self, **changes) -> "SteeringVector":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ arithmetic

    def _scaled(self, factor: float) -> "SteeringVector":
        if not isinstance(factor, numbers.Real) or isinstance(factor, bool) or not np.isfinite(factor):
            raise SteeringInputError(f"a steering vector is scaled by a finite real number, not {factor!r}")
        return self.replace(directions={k: v * np.float32(factor) for k, v in self.directions.items()})

    def __mul__(self, factor):
        if isinstance(factor, SteeringVector):
            return NotImplemented
        return self._scaled(factor)

    __rmul__ = __mul__

    def __truediv__(self, factor):
        if isinstance(factor, SteeringVector) or factor == 0:
            raise SteeringInputError(f"a steering vector is divided by a non-zero number, not {factor!r}")
        return self._scaled(1.0 / factor)

    def __neg__(self):
        return self._scaled(-1.0)

    def __add__(self, other):
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self.check_compatible(other)
        dirs = dict(self.directions)
        for k, v in other.directions.items():
            dirs[k] = dirs[k] + v if k in dirs else v.copy()
        trait = self.trait if self.trait == other.trait else f"{self.trait}+{other.trait}"
        return self.replace(directions=dirs, trait=trait, method="sum", report={},
                            model=self.model if _known(self.model) else other.model,
                            model_type=self.model_type or other.model_type,
                            typical_norms={**other.typical_norms, **self.typical_norms})

    def __sub__(self, other):
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return self + (-other)

    def check_compatible(self, other: "SteeringVector") -> None:
        """Refuse (VectorMismatchError, one line) vectors of other widths, models or units."""
        if other.d_model != self.d_model:
            raise VectorMismatchError(f"vectors of d_model {self.d_model} and {other.d_model} cannot be combined; "
                                      "transfer one to the other's model first (stf_jax.transfer)")
        if _known(self.model) and _known(other.model) and self.model != other.model:
            raise VectorMismatchError(f"a vector of {self.model!r} and one of {other.model!r} cannot be combined; "
                                      "transfer one to the other's model first (stf_jax.transfer)")
        if self.units != other.units:
            raise VectorMismatchError(f"a vector in {self.units} units and one in {other.units} units cannot be "
                                      "combined; convert one with .to_residual()")

    def normalized(self) -> "SteeringVector":
        """Every layer's direction at length 1."""
        return self.replace(directions={k: v / np.float32(np.linalg.norm(v)) for k, v in self.directions.items()})

    def at_layers(self, layers: Iterable[int]) -> "SteeringVector":
        """Only the given HF layers (each must be present)."""
        layers = [int(lay) for lay in layers]
        missing = [lay for lay in layers if lay not in self.directions]
        if missing:
            raise SteeringInputError(f"{self.trait} vector has no direction at HF layer(s) {missing}; it has "
                                     f"{self.layers}")
        return self.replace(directions={lay: self.directions[lay] for lay in layers},
                            typical_norms={k: v for k, v in self.typical_norms.items() if k in layers})

    def to_residual(self, strength: float = DEFAULT_STRENGTH) -> "SteeringVector":
        """The same steering in residual units: a typical-norm vector times strength x typical |h| per layer
        (the numbers llama.cpp and repeng add); a residual vector is returned as it is."""
        if self.units == "residual":
            return self
        missing = [lay for lay in self.layers if lay not in self.typical_norms]
        if missing:
            raise SteeringInputError(f"{self.trait} vector is in typical-|h| units but its typical |h| at HF "
                                     f"layer(s) {missing} is not known; give typical_norms= (core.norms.typical_norms)")
        dirs = {k: v * np.float32(strength * self.typical_norms[k]) for k, v in self.directions.items()}
        prov = {**self.provenance, **stored_strength(strength)}
        return self.replace(directions=dirs, units="residual", provenance=prov)

    # ------------------------------------------------------------ files and other libraries

    def save(self, path: str | Path) -> Path:
        """Write by suffix: `.gguf` (llama.cpp `--control-vector`, repeng) or `.safetensors`, in residual units
        (see `to_residual`); atomic."""
        from .vectorfile import write_vector_file

        v = self.to_residual()
        return write_vector_file(path, v.directions, model_hint=v.model_hint, metadata=v.metadata)

    @classmethod
    def load(cls, path: str | Path, layer: int | None = None, model: str | None = None) -> "SteeringVector":
        """Read a llama.cpp / repeng / stf_jax `.gguf`, an stf_jax `.safetensors`, or a `.npy` vector (its HF
        `layer` required). `layer` keeps one direction of a multi-layer file. Residual units, as stored."""
        from .vectorfile import read_vector_file

        path = Path(path)
        vf = read_vector_file(path, layer)
        from .vectorfile import DERIVED_KEYS

        meta = {k.removeprefix("stf_jax."): v for k, v in vf.metadata.items()
                if k.startswith("stf_jax.") and k.removeprefix("stf_jax.") not in DERIVED_KEYS}
        norms = _json_dict(meta.pop("typical_norms", None))
        known = {"trait": meta.pop("trait", UNKNOWN), "method": meta.pop("method", "file")}
        target = meta.get("target_model")
        return cls(dict(vf.directions), model=model or target or UNKNOWN, model_type=vf.model_hint,
                   typical_norms=norms, provenance={**meta, "file": path.name}, **known)

    @classmethod
    def from_repeng(cls, control_vector, model: str = UNKNOWN, trait: str = UNKNOWN) -> "SteeringVector":
        """From repeng's `ControlVector` (directions keyed by block index i = HF layer i + 1)."""
        dirs = {int(i) + 1: np.asarray(v, np.float32) for i, v in control_vector.directions.items()}
        return cls(dirs, model=model, model_type=str(control_vector.model_type), trait=trait, method="repeng")

    def to_repeng(self):
        """repeng's `ControlVector` (needs the `repeng` package), in residual units as repeng adds them."""
        import repeng

        v = self.to_residual()
        return repeng.ControlVector(model_type=v.model_hint, directions={k - 1: d.copy() for k, d in v.directions.items()})

    @classmethod
    def from_steering_vectors(cls, steering_vector, model: str = UNKNOWN, trait: str = UNKNOWN) -> "SteeringVector":
        """From steering-vectors' `SteeringVector` (decoder-block outputs keyed by block index; torch tensors)."""
        if getattr(steering_vector, "layer_type", "decoder_block") != "decoder_block":
            raise SteeringInputError(f"steering-vectors layer_type {steering_vector.layer_type!r}: only decoder_block "
                                     "outputs are the residual stream stf_jax steers")
        dirs = {int(i) + 1: np.asarray(t.detach().float().cpu().numpy(), np.float32).reshape(-1)
                for i, t in steering_vector.layer_activations.items()}
        return cls(dirs, model=model, trait=trait, method="steering-vectors")

    def to_steering_vectors(self):
        """steering-vectors' `SteeringVector` (needs torch and `steering-vectors`), residual units."""
        import torch
        from steering_vectors import SteeringVector as TorchSteeringVector

        v = self.to_residual()
        return TorchSteeringVector({k - 1: torch.from_numpy(d.copy()) for k, d in v.directions.items()},
                                   "decoder_block")


def _json_dict(text: str | None) -> dict[int, float]:
    if not text:
        return {}
    try:
        data = json.loads(text)
        return {int(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def model_family(model_type: str) -> str:
    """An HF model_type's family as llama.cpp hints name it: gemma3_text and gemma3 are one family."""
    return model_type.lower().removesuffix("_text")


def model_mismatch(vector: "SteeringVector", name: str, model_type: str = "") -> str | None:
    """Why `vector` was not made for the model `name` (HF `model_type`), when its file says so: another model
    name, or a model hint of another family; None when it may be (or does not say)."""
    if vector.model not in (UNKNOWN, name):
        return f"made for {vector.model!r}, not {name!r}"
    if vector.model_type and model_type and vector.model_type != name \
            and model_family(vector.model_type) != model_family(model_type):  # (a hint may be the model's name)
        return f"its model hint is {vector.model_type!r}, but {name!r} is {model_type!r}"
    return None


def stored_strength(fraction: float | None, typical_norms: dict[int, float] | None = None) -> dict[str, str]:
    """The file metadata saying what a stored length means (`stf_jax.strength_source`, `scale`): `fraction` x
    each layer's typical |h| (with `typical_norms`, recorded too), so strength 1 gives that effect; or, with
    None, unit length. `steer calibrate` records "calibrated" with its own numbers instead."""
    if fraction is None:
        return {"strength_source": "unit", "scale": "unit length: choose the strength yourself"}
    out = {"strength_source": "typical_norm_fraction",
           "scale": f"{fraction:g} x typical |h| per layer (steer at strength 1 for this effect)"}
    if typical_norms:
        out["typical_norms"] = json.dumps({str(k): float(v) for k, v in typical_norms.items()})
    return out
