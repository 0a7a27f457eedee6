"""The server's vector library: named steering vectors in one directory, uploaded, listed and removed live.

A vector is a file `<name>.gguf` or `<name>.safetensors` (llama.cpp, repeng or stf_jax control vectors, in
residual units: the length is the strength at 1). An upload is read and checked in a hidden temporary file
beside the library and written into place (atomically) only when it is a usable vector for the served model, so a
restart finds exactly the vectors that were accepted. A vector made for another model is carried through
the server's map set (`--map`) on upload when it has one, and refused with the reason when it has not.

Steering a request: `steering([{"vector": "formality", "strength": 0.8}, ...])` adds the named vectors up
into one [n_layers, d_model] table (row i = after block i), each at its strength on its scale:
  "stored"     strength x the vector as stored (llama.cpp's `--control-vector-scaled FILE:s`)  [default]
  "unit"       strength x v/|v| per layer
  "mean-norm"  strength x the layer's typical |h| x v/|v| (`steer generate --scale mean-norm`)
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.atomic import atomic_write_bytes
from ..core.vector import SteeringVector, model_mismatch
from ..errors import UserError

log = logging.getLogger("stf_jax.serve")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SUFFIXES = (".gguf", ".safetensors")
SCALES = ("stored", "unit", "mean-norm")
MAX_STEERING = 16  # vectors one request may add up
MAX_STRENGTH = 1e4


class LibraryError(UserError):
    """A library or steering request that cannot be served: `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LibraryError(f"vector name {name!r}: use 1-64 letters, digits, '-' or '_' (starting with a letter or "
                           "digit)")
    return name


def sniff_suffix(data: bytes) -> str:
    """".gguf" or ".safetensors" from a file's first bytes (an upload has no trustworthy name)."""
    if data[:4] == b"GGUF":
        return ".gguf"
    if len(data) > 9 and data[8:9] == b"{":
        return ".safetensors"
    raise LibraryError("the upload is neither a GGUF nor a safetensors control vector (llama.cpp, repeng or stf_jax "
                       "file expected)")


class VectorLibrary:
    """Vectors for one model, kept in `directory` (created if missing)."""

    def __init__(self, directory: str | Path, model, map_set=None, typical_texts: Sequence[str] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.model, self.map_set = model, map_set
        self._vectors: dict[str, SteeringVector] = {}
        self._lock, self._norms_lock = threading.Lock(), threading.Lock()
        self._typical: dict[int, float] | None = None
        self._typical_texts = typical_texts
        self.skipped: dict[str, str] = {}
        for path in sorted(self.directory.iterdir()):
            if path.suffix in SUFFIXES and not path.name.startswith(".") and NAME.fullmatch(path.stem):
                try:
                    self._vectors[path.stem] = self._usable(SteeringVector.load(path), path.name)
                except (UserError, ValueError, OSError) as exc:
                    self.skipped[path.name] = str(exc)
                    log.warning("skipping %s: %s", path, exc)

    # ----------------------------------------------------------------- reading

    def names(self) -> list[str]:
        return sorted(self._vectors)

    def get(self, name: str) -> SteeringVector:
        try:
            return self._vectors[name]
        except KeyError:
            raise LibraryError(f"no vector named {name!r} in the library (GET /v1/vectors lists them)", 404) from None

    def describe(self, name: str) -> dict[str, Any]:
        v = self.get(name)
        return {"name": name, "object": "vector", "layers": v.layers,
                "norms": {str(k): round(n, 4) for k, n in v.norms.items()}, "trait": v.trait, "model": v.model,
                "carried_from": v.provenance.get("carried_from")}

    # ----------------------------------------------------------------- changing

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Add or replace vector `name` from a file's bytes; checked (and carried) before it replaces anything."""
        check_name(name)
        suffix = sniff_suffix(data)
        tmp = self.directory / f".upload-{uuid.uuid4().hex}{suffix}"  # read back and checked before anything changes
        try:
            tmp.write_bytes(data)
            try:
                vector = SteeringVector.load(tmp)
            except (UserError, ValueError) as exc:
                raise LibraryError(f"vector {name!r}: {exc}".replace(str(tmp), "the upload")) from None
            vector = self._usable(vector, "the upload")
            final = self.directory / f"{name}{suffix}"
            with self._lock:
                if "carried_from" in vector.provenance:  # carried: the file to keep is the target model's vector
                    final = vector.save(self.directory / f"{name}.gguf")
                else:
                    atomic_write_bytes(final, data)
                for other in SUFFIXES:
                    if self.directory / f"{name}{other}" != final:
                        (self.directory / f"{name}{other}").unlink(missing_ok=True)
                self._vectors[name] = vector
        finally:
            tmp.unlink(missing_ok=True)
        return self.describe(name)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self.get(name)
            for suffix in SUFFIXES:
                (self.directory / f"{name}{suffix}").unlink(missing_ok=True)
            del self._vectors[name]

    def _usable(self, vector: SteeringVector, where: str) -> SteeringVector:
        """The vector as this model steers with it: checked, or carried through the map set, or refused."""
        cfg = self.model.config
        other_model = model_mismatch(vector, self.model.name, getattr(cfg, "model_type", ""))
        if vector.d_model != cfg.d_model or other_model:
            if self.map_set is None:
                why = other_model or f"its width is {vector.d_model}, the served model's is {cfg.d_model}"
                raise LibraryError(f"{where}: {why}; upload a vector of {self.model.name} or start the server with "
                                   "--map SOURCE->TARGET to carry vectors of another model")
            from ..transfer import transfer

            try:
                carried = transfer(vector, self.map_set)
            except (UserError, ValueError) as exc:
                raise LibraryError(f"{where}: could not be carried to {self.model.name}: {exc}") from None
            vector = carried.replace(provenance={**carried.provenance, "carried_from": vector.model})
        bad = [lay for lay in vector.layers if not 1 <= lay <= cfg.n_layers]
        if bad:
            raise LibraryError(f"{where}: HF layer(s) {bad} are outside the model's block outputs 1..{cfg.n_layers}")
        norms = vector.norms
        if any(not np.isfinite(n) for n in norms.values()):
            raise LibraryError(f"{where}: the vector holds NaN or Inf")
        if all(n == 0 for n in norms.values()):
            raise LibraryError(f"{where}: the vector is zero at every layer")
        return vector.to_residual()

    # ----------------------------------------------------------------- steering a request

    def steering(self, entries: Any) -> np.ndarray | None:
        """[n_layers, d_model] steering for a request's `steering` field (None when it asks for none)."""
        if entries is None or entries == []:
            return None
        if not isinstance(entries, list) or len(entries) > MAX_STEERING:
            raise LibraryError(f"steering must be a list of at most {MAX_STEERING} objects like "
                               '{"vector": "formality", "strength": 0.8}')
        cfg = self.model.config
        table = np.zeros((cfg.n_layers, cfg.d_model), np.float32)
        for entry in entries:
            name, strength, scale = self._entry(entry)
            vector = self.get(name)
            for layer, v in vector.directions.items():
                table[layer - 1] += self._scaled(v, layer, scale) * np.float32(strength)
        return table

    def _entry(self, entry: Any) -> tuple[str, float, str]:
        if not isinstance(entry, dict) or not isinstance(entry.get("vector"), str):
            raise LibraryError('each steering entry is an object with a "vector" name and a "strength"')
        unknown = set(entry) - {"vector", "strength", "scale"}
        if unknown:
            raise LibraryError(f"steering entry fields {sorted(unknown)} are not known (vector, strength, scale)")
        strength = entry.get("strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not np.isfinite(strength) \
                or abs(strength) > MAX_STRENGTH:
            raise LibraryError(f"steering strength {strength!r} for {entry['vector']!r}: give a finite number with "
                               f"|strength| <= {MAX_STRENGTH:g}")
        scale = entry.get("scale", "stored")
        if scale not in SCALES:
            raise LibraryError(f"steering scale {scale!r}: choose from {list(SCALES)}")
        return entry["vector"], float(strength), scale

    def _scaled(self, v: np.ndarray, layer: int, scale: str) -> np.ndarray:
        if scale == "stored":
            return v
        unit = v / max(float(np.linalg.norm(v)), 1e-12)
        if scale == "unit":
            return unit
        return unit * np.float32(self.typical_norms()[layer])

    def typical_norms(self) -> dict[int, float]:
        """{HF layer: typical |h|} of the served model, measured once (on first use, or when the server starts
        it in the background) on 16 of the shipped corpus's texts."""
        with self._norms_lock:
            return self._measure_norms()

    def _measure_norms(self) -> dict[int, float]:
        if self._typical is None:
            from ..core.norms import typical_norms

            texts = self._typical_texts
            if texts is None:
                from ..data.corpus import load_corpus

                texts = [c.text for c in load_corpus()[:16]]
            self._typical = typical_norms(self.model, texts, range(1, self.model.config.n_layers + 1), batch=8)
        return self._typical
