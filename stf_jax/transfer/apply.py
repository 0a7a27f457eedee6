"""Carry steering vectors through a map set: one vector, a multi-layer control vector, or a library.

Direction: each input direction at source layer ls goes through the map of its layer pair as a unit
vector (maps are fitted on unit pair vectors, so a file's stored scale never bends the direction), and
the result is normalised.

Strength (`strength`), for a vector in residual units (a file; llama.cpp's and repeng's meaning):
  "relative"  (default) |out| / typical|h_t(lt)| = |in| / typical|h_s(ls)|: the strength that worked in
              the source model (in llama.cpp, repeng or stf_jax) is the one to try in the target;
  "keep"      |out| = |in| (absolute residual-stream units; models of different scale will differ);
  "unit"      |out| = 1.
A vector in typical-|h| units (trained here: `SteeringVector.units`) keeps its length and units under
"relative" and "keep" (its length already is relative to |h|), and gets length 1 under "unit".
Layers: a source layer with no map, or a target layer whose source layer the input lacks, is reported
in the result's `report`, never dropped silently.
Coverage (`transfer.coverage`): every carried layer gets a score of how much of the input direction lies
where its map was fitted (`Carried.coverage`, `report["coverage"]`, and `stf_jax.coverage` in written
files); below the threshold a warning names the layer, and strict=True refuses the vector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core.vector import SteeringVector
from .library import Library, TransferInputError, read_library
from .mapfile import MapSet

STRENGTHS = ("relative", "keep", "unit")


class CoverageError(TransferInputError):
    """strict=True and a carried layer's coverage is below the threshold: the map cannot vouch for it."""


Carried = SteeringVector  # the name of a transfer's result before SteeringVector; kept importable


def _check_vector(v: np.ndarray, layer: int, d_s: int, where: str) -> float:
    if v.ndim != 1 or v.shape[0] != d_s:
        raise TransferInputError(f"{where}: layer {layer} has shape {tuple(v.shape)} but the map's source model has "
                                 f"d_model {d_s}; use a map set fitted from this vector's model")
    norm = float(np.linalg.norm(v.astype(np.float64)))  # finite: every SteeringVector is checked on creation
    if norm == 0.0:
        raise TransferInputError(f"{where}: layer {layer} is all zeros, which has no direction to carry")
    return norm


def _out_norm(strength: str, norm_in: float, pair: dict[str, Any], where: str) -> float:
    if strength == "keep":
        return norm_in
    if strength == "unit":
        return 1.0
    h_s, h_t = pair["source"].get("typical_norm"), pair["target"].get("typical_norm")
    if not h_s or not h_t:
        raise TransferInputError(f"{where}: the map set records no typical |h| for layer pair "
                                 f"{pair['source']['layer']}->{pair['target']['layer']} (fitted without norms); "
                                 "use strength 'keep' or 'unit', or refit with norms")
    return norm_in * float(h_t) / float(h_s)


@jax.jit
def _call(m, u: jax.Array) -> jax.Array:
    return m(u)  # compiled once per map structure and input shape, reused by every layer pair and call


def _apply_unit(m, u: np.ndarray) -> np.ndarray:
    """m(u) for unit rows u [m, d_s], normalised rows [m, d_t]."""
    y = np.asarray(_call(m, jnp.asarray(u, jnp.float32)), np.float64)
    norms = np.linalg.norm(y, axis=-1, keepdims=True)
    if not np.all(norms > 0):
        raise TransferInputError("the map sends this direction to zero; it cannot be carried")
    return (y / norms).astype(np.float32)


def carry_many(map_set: MapSet, vectors: Sequence[SteeringVector | dict[int, np.ndarray]], strength: str = "relative",
               names: Sequence[str] | None = None, strict: bool = False,
               threshold: float | None = None, force: bool = False) -> list[SteeringVector]:
    """Carry many multi-layer vectors (SteeringVectors, or {source HF layer: [d_s]} in residual units) at
    once: one batched map call per layer pair, whatever the number of vectors (a library of thousands).
    strict: refuse (CoverageError) a vector with any carried layer whose coverage is below `threshold`
    (default coverage.THRESHOLD). A vector that says which model it is for (its model name, or its file's
    model hint) must be the map set's source model; force=True carries it anyway."""
    if strength not in STRENGTHS:
        raise TransferInputError(f"strength {strength!r}: choose from {list(STRENGTHS)}")
    vectors = [v if isinstance(v, SteeringVector) else SteeringVector(dict(v)) for v in vectors]
    names = list(names) if names is not None else [
        v.trait if v.trait != "unknown" else f"vector {i}" for i, v in enumerate(vectors)]
    if not force:
        _check_source(map_set, vectors, names)
    inputs = [v.directions for v in vectors]
    d_s = int(map_set.source["d_model"])
    norms = [{lay: _check_vector(np.asarray(v, np.float32), lay, d_s, names[i]) for lay, v in d.items()}
             for i, d in enumerate(inputs)]
    outs: list[dict[int, np.ndarray]] = [{} for _ in inputs]
    cover: list[dict[str, float]] = [{} for _ in inputs]
    used: list[set[int]] = [set() for _ in inputs]
    missing: list[list[int]] = [[] for _ in inputs]
    for lt, lm in sorted(map_set.maps.items()):
        ls, stack = lm.layer_source, lm.layers_source  # a many-to-one map reads its whole stack; ls is in it
        rows = []  # the vectors holding every layer the map reads (one pass: a library may hold thousands)
        for i, d in enumerate(inputs):
            if all(lay in d for lay in stack):
                rows.append(i)
            else:
                missing[i].append(lt)
        if not rows:
            continue
        u = np.stack([np.concatenate([np.asarray(inputs[i][lay], np.float32) / norms[i][lay] for lay in stack])
                      for i in rows])  # [rows, len(stack) * d_s]: each layer's unit direction, side by side
        carried = _apply_unit(lm.map, u)
        scores = map_set.coverage(lt, u)
        for r, i in enumerate(rows):
            # a typical-|h| vector's length already is relative to |h|: "relative" keeps it
            rule = "keep" if strength == "relative" and vectors[i].units == "typical_norm" else strength
            outs[i][lt] = carried[r] * np.float32(_out_norm(rule, norms[i][ls], lm.header, names[i]))
            used[i].update(stack)
            if scores is not None:
                cover[i][str(lt)] = round(float(scores[r]), 4)
    results = []
    digest = map_set.digest()
    for i, d in enumerate(inputs):
        unmapped = sorted(set(d) - used[i])
        if not outs[i]:
            stacks = sorted({lm.layers_source for lm in map_set.maps.values()})
            if any(len(st) > 1 for st in stacks):
                raise TransferInputError(
                    f"{names[i]}: a many-to-one map set reads source layers {list(stacks[0])} together; the vector "
                    f"has {sorted(d)} (carry a multi-layer vector, or use a one-to-one map set)")
            raise TransferInputError(
                f"{names[i]}: none of its layers {sorted(d)} is a source layer of the map set "
                f"({sorted({lm.layer_source for lm in map_set.maps.values()})}); fit a map set that covers them "
                "(python -m stf_jax.transfer fit --layers depth)")
        report = {"layer_mapping": {"+".join(map(str, lm.layers_source)): lt for lt, lm in sorted(map_set.maps.items())
                                    if lt in outs[i]},
                  "unmapped_source_layers": unmapped, "target_layers_without_input": missing[i],
                  "strength": strength, "coverage": cover[i]}
        results.append(_carried(map_set, digest, vectors[i], outs[i], report))
    if strict:
        _refuse_low_coverage(results, names, threshold)
    return results


def _check_source(map_set: MapSet, vectors: Sequence[SteeringVector], names: Sequence[str]) -> None:
    """A vector that names its model (name, or model type / llama.cpp hint) must be the map's source model."""
    from ..core.vector import model_mismatch

    src, src_type = map_set.source["name"], map_set.source.get("model_type") or ""
    for v, name in zip(vectors, names):
        problem = model_mismatch(v, src, src_type)
        if problem:
            raise TransferInputError(f"{name}: {problem}, the map set's source; use a map set fitted from the "
                                     "vector's model, or force= to carry it anyway")


def _carried(map_set: MapSet, digest: str, vector: SteeringVector, directions: dict[int, np.ndarray],
             report: dict[str, Any]) -> SteeringVector:
    """The target model's SteeringVector, with where it came from."""
    target, source = map_set.target, map_set.source
    norms = {lt: map_set.maps[lt].header["target"].get("typical_norm") for lt in directions}
    provenance = {"source_model": source["name"], "target_model": target["name"], "transfer_method": map_set.method,
                  "map_set_sha256": digest, "layer_mapping": json.dumps(report["layer_mapping"]),
                  "strength_convention": report["strength"], "coverage": json.dumps(report["coverage"]),
                  "unmapped_source_layers": json.dumps(report["unmapped_source_layers"]),
                  "source_model_hint": vector.model_type}
    return SteeringVector(dict(sorted(directions.items())), model=target["name"],
                          model_type=target.get("model_type") or "", trait=vector.trait, method=map_set.method,
                          units=vector.units, typical_norms={k: v for k, v in norms.items() if v},
                          provenance=provenance, report=report)


def _refuse_low_coverage(results: list[SteeringVector], names: Sequence[str], threshold: float | None) -> None:
    from .coverage import THRESHOLD

    t = THRESHOLD if threshold is None else threshold
    for name, c in zip(names, results):
        low = c.low_coverage(t)
        if low:
            shown = ", ".join(f"L{lay} {v:.2f}" for lay, v in sorted(low.items())[:6])
            raise CoverageError(f"{name}: coverage below {t} at {len(low)} target layer(s) ({shown}): the map set "
                                "was not fitted on vectors like this one; use a map set fitted on data of its kind "
                                "(e.g. a shipped one, shipped:…, or transfer fit with more sources), or drop strict=")


def carry(map_set: MapSet, directions: SteeringVector | dict[int, np.ndarray] | np.ndarray, layer: int | None = None,
          strength: str = "relative", strict: bool = False, force: bool = False) -> SteeringVector:
    """One vector: a SteeringVector, {source HF layer: [d_s]}, or a single [d_s] array with its source `layer`."""
    if not isinstance(directions, (SteeringVector, dict)):
        v = np.asarray(directions, np.float32)
        if layer is None:
            if len(map_set.maps) != 1:
                raise TransferInputError("a bare vector needs its source layer (layer=) when the map set has "
                                         f"{len(map_set.maps)} layer pairs")
            layer = next(iter(map_set.maps.values())).layer_source
        directions = {int(layer): v}
    return carry_many(map_set, [directions], strength, strict=strict, force=force)[0]


# ---------------------------------------------------------------- files


def transfer_files(map_set: MapSet, inputs: Sequence[str | Path] | Library, out_dir: str | Path, *,
                   layer: int | None = None, strength: str = "relative", fmt: str = "gguf", strict: bool = False,
                   threshold: float | None = None, log=print, force: bool = False
                   ) -> list[tuple[Path, SteeringVector]]:
    """Carry every input file (or library directory) and write the target control vectors under out_dir.

    Output names mirror the inputs' paths relative to their library directory; each file records its
    provenance (source file hash, map-set digest, method, layer mapping, strengths, typical |h|). inputs:
    paths, or a `Library` already read (`library.read_library`, which the CLI runs before loading maps)."""
    from ..core.atomic import file_sha256
    from ..locks import DirLock
    from ..safe_paths import inside

    out_dir = Path(out_dir)
    lib = inputs if isinstance(inputs, Library) else read_library(inputs, out_dir, layer, fmt)
    files, outs, read = lib.files, lib.outs, lib.vectors
    carried = carry_many(map_set, read, strength, names=[str(f) for f in files], strict=strict,
                         threshold=threshold, force=force)  # seconds for a library; any refusal writes nothing
    with DirLock(out_dir, "transfer apply"):  # one writer of out_dir
        written = []
        for f, r, v, c in zip(files, outs, read, carried):
            dest = inside(out_dir, r)
            c = c.replace(trait=v.trait if v.trait != "unknown" else f.stem, provenance={
                **c.provenance, "source_file": f.name, "source_file_sha256": file_sha256(f)})
            c.save(dest)
            written.append((dest, c))
            if c.report["unmapped_source_layers"]:
                log(f"{f}: source layers {c.report['unmapped_source_layers']} have no map in the set (not carried)")
            low = c.low_coverage(threshold)
            if low:
                log(f"warning: {f}: low coverage at target layer(s) " + ", ".join(
                    f"L{lay} {v:.2f}" for lay, v in sorted(low.items())) +
                    " (the map set was not fitted on vectors like this; the carried direction may be unrelated to the "
                    "target's own; --strict refuses such vectors)")
    return written
