"""Map files and map sets: fitted maps that travel (safetensors tensors + a JSON header).

A **map file** (`.safetensors`) holds one map between one source layer and one target layer. Its
tensors are the map's arrays by tree path (`maps.map_tensors`); its metadata key `stf_jax.map` is a JSON
header saying everything needed to use and trust it:

    format, format_version, method, settings (FitSettings), stf_jax version,
    source / target: name, model_type, config_hash, d_model, n_layers, layer, typical_norm
    data: dataset hash, pair count, traits;  quality: held-out centered cosine vs the trait_mean baseline

A map file may also hold `coverage/basis` [k, d_s] (`transfer.coverage`): where in the source space the
map was fitted, so `transfer` can score how far each carried vector can be trusted.

A **map set** is a directory: `mapset.json` (the same model-level fields and one entry per layer pair)
plus one map file per pair. It covers the target's steerable layers, so a multi-layer control vector is
carried in one call (`MapSet.carry`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..align import maps
from ..errors import UserError
from ..core.atomic import file_sha256

FORMAT = "stf_jax.map"
FORMAT_VERSION = 1
SET_FILE = "mapset.json"
_HEADER_KEY = "stf_jax.map"


class MapFileError(UserError, ValueError):
    """A map file or map set that cannot be read or does not fit the request."""


@dataclasses.dataclass
class LayerMap:
    """One fitted map between source layer `layer_source` and target layer `layer_target` (HF indices)."""

    map: Any
    header: dict[str, Any]
    coverage_basis: np.ndarray | None = None  # [k, d_s] (transfer.coverage); None in maps written before it
    coverage_rest: float = 0.0  # mean leverage of the axes a compact basis dropped

    @property
    def layer_source(self) -> int:
        return int(self.header["source"]["layer"])

    @property
    def layer_target(self) -> int:
        return int(self.header["target"]["layer"])

    @property
    def layers_source(self) -> tuple[int, ...]:
        """The source layers the map reads, side by side: several for a many-to-one map, else one."""
        return tuple(int(x) for x in self.header["source"].get("layers") or [self.layer_source])


def header_for(method: str, settings: maps.FitSettings, source: dict, target: dict, data: dict,
               quality: dict) -> dict[str, Any]:
    from .. import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method, "settings": settings.to_json(),
            "source": source, "target": target, "data": data, "quality": quality, "stf_jax": __version__}


COVERAGE_TENSOR = "coverage/basis"
COVERAGE_REST = "coverage/rest"


def save_map(path: str | Path, layer_map: LayerMap, dtype: str = "float32") -> str:
    """Write one map file atomically; returns its sha256. dtype "float16" halves the file (the shipped
    map sets: directions keep a cosine > 0.9999 to the float32 map's)."""
    from ..core.atomic import atomic_save_tensors

    tensors = dict(maps.map_tensors(layer_map.map))
    if layer_map.coverage_basis is not None:
        tensors[COVERAGE_TENSOR] = np.asarray(layer_map.coverage_basis, np.float32)
        tensors[COVERAGE_REST] = np.asarray([layer_map.coverage_rest], np.float32)
    tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    return atomic_save_tensors(Path(path), tensors, {_HEADER_KEY: json.dumps(layer_map.header, sort_keys=True)})


# the declared shape of a map file's header and of a map-set index: key -> type (checked before use)
_MODEL_RECORD = {"name": str, "d_model": int, "n_layers": int}
_HEADER_SCHEMA = {"format": str, "format_version": int, "method": str, "settings": dict, "source": dict,
                  "target": dict}
_INDEX_SCHEMA = {"format": str, "format_version": int, "method": str, "settings": dict, "source": dict,
                 "target": dict, "maps": list}


def _check_schema(obj: dict, schema: dict[str, type], where: str, what: str) -> None:
    """The object `obj` holds every key of `schema` with a value of its type (bools are not integers); a map
    header's model records also name their layer. (Callers have checked that it is an object.)"""
    for key, tp in schema.items():
        value = obj.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, tp):
            got = "missing" if value is None else f"a {type(value).__name__}"
            raise MapFileError(f"{where}: {what} field {key!r} is {got} (expected {tp.__name__}); refit the map set")
    for side in ("source", "target"):
        record = {**_MODEL_RECORD, **({"layer": int} if what == "map header" else {})}
        _check_fields(obj[side], record, where, f"{what} {side}")


def _check_fields(record: dict, schema: dict[str, type], where: str, what: str) -> None:
    for key, tp in schema.items():
        value = record.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, tp):
            got = "missing" if value is None else repr(value)
            raise MapFileError(f"{where}: {what} {key!r} is {got} (expected {tp.__name__}); refit the map set")
        if tp is int and value < (0 if key == "layer" else 1):
            raise MapFileError(f"{where}: {what} {key!r} is {value}; refit the map set")


def _check_header(header: dict, where: str) -> None:
    if not isinstance(header, dict):
        raise MapFileError(f"{where}: the map header is a {type(header).__name__}, not an object; refit the map set")
    if header.get("format") != FORMAT:
        raise MapFileError(f"{where}: not an stf_jax map (format {header.get('format')!r}); make one with "
                           "python -m stf_jax.transfer fit")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MapFileError(f"{where}: map format version {version!r} is newer than this stf_jax reads "
                           f"({FORMAT_VERSION}); upgrade stf_jax")
    _check_schema(header, _HEADER_SCHEMA, where, "map header")
    if header.get("method") not in maps.METHODS:
        raise MapFileError(f"{where}: unknown method {header.get('method')!r}; this stf_jax knows {list(maps.METHODS)}")


def load_layer_map(path: str | Path) -> LayerMap:
    """Read one map file (format checked; tensors checked against the method's structure)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"{path}: map file not found")
    try:
        with safe_open(str(path), "numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MapFileError(f"{path}: not a readable safetensors map file ({exc})") from None
    if _HEADER_KEY not in meta:
        raise MapFileError(f"{path}: no {_HEADER_KEY} header: not an stf_jax map file")
    try:
        header = json.loads(meta[_HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise MapFileError(f"{path}: corrupt map header ({exc})") from None
    _check_header(header, str(path))
    try:
        settings = maps.FitSettings.from_json(header["settings"])
    except ValueError as exc:
        raise MapFileError(f"{path}: the map header's {exc}; refit the map set") from None
    basis, rest = tensors.pop(COVERAGE_TENSOR, None), tensors.pop(COVERAGE_REST, np.zeros(1, np.float32))
    d_s = int(header["source"]["d_model"]) * len(_stack(header, str(path)))  # a many-to-one map reads a stack
    if basis is not None and (basis.ndim != 2 or basis.shape[1] != d_s or not np.isfinite(basis).all()):
        raise MapFileError(f"{path}: tensor {COVERAGE_TENSOR} has shape {basis.shape} (expected [k, {d_s}], finite)")
    if rest.shape != (1,) or not 0.0 <= float(rest[0]) <= 1.0:
        raise MapFileError(f"{path}: tensor {COVERAGE_REST} must be one number in [0, 1]")
    try:
        m = maps.map_from_tensors(header["method"], {k: v.astype(np.float32) for k, v in tensors.items()}, d_s,
                                  int(header["target"]["d_model"]), settings)
    except ValueError as exc:
        raise MapFileError(f"{path}: {exc}") from None
    return LayerMap(m, header, None if basis is None else basis.astype(np.float32), float(rest[0]))


def _stack(header: dict, where: str) -> list[int]:
    """The source layers a map reads (checked: a list of integer layers including its `layer`)."""
    layers = header["source"].get("layers")
    if layers is None:
        return [header["source"].get("layer")]
    if not (isinstance(layers, list) and layers and all(isinstance(x, int) and not isinstance(x, bool) for x in layers)
            and header["source"].get("layer") in layers):
        raise MapFileError(f"{where}: source.layers must be a list of integer layers that includes source.layer; "
                           "refit the map set")
    return layers


def _model_fields(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("layer", "layers", "typical_norm")}


@dataclasses.dataclass
class MapSet:
    """Maps for several layer pairs between one source and one target model, keyed by target layer."""

    maps: dict[int, LayerMap]
    path: Path | None = None

    @property
    def header(self) -> dict[str, Any]:
        return next(iter(self.maps.values())).header

    @property
    def source(self) -> dict:
        return _model_fields(self.header["source"])

    @property
    def target(self) -> dict:
        return _model_fields(self.header["target"])

    @property
    def method(self) -> str:
        return self.header["method"]

    def layer_pairs(self) -> list[tuple[int, int]]:
        return [(m.layer_source, lt) for lt, m in sorted(self.maps.items())]

    def digest(self) -> str:
        """sha256 over every map's tensors and header: names this exact map set in provenance."""
        h = hashlib.sha256()
        for lt, m in sorted(self.maps.items()):
            h.update(json.dumps(m.header, sort_keys=True).encode())
            for name, arr in sorted(maps.map_tensors(m.map).items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(arr, np.float32).tobytes())
            if m.coverage_basis is not None:
                h.update(np.ascontiguousarray(m.coverage_basis, np.float32).tobytes())
                h.update(np.float32(m.coverage_rest).tobytes())
        return h.hexdigest()

    def coverage(self, layer_target: int, u: np.ndarray) -> np.ndarray | None:
        """Coverage of source directions u [..., d_s] under the map of `layer_target` (None: not recorded)."""
        from .coverage import coverage

        lm = self.maps[layer_target]
        return None if lm.coverage_basis is None else coverage(lm.coverage_basis, u, lm.coverage_rest)

    def save(self, out_dir: str | Path, dtype: str = "float32", replace: bool = False) -> Path:
        """Write the map files and `mapset.json` (last, so a directory with mapset.json is complete).
        A directory holding a map set already is refused unless replace=True (then the old set's map
        files that the new one does not list are removed after the new index is written)."""
        from ..core.atomic import atomic_write_bytes

        out = Path(out_dir)
        if (out / SET_FILE).exists() and not replace:
            raise MapFileError(f"{out} already holds a map set; write elsewhere, or replace=True")
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for lt, m in sorted(self.maps.items()):
            name = f"map_L{m.layer_source:03d}_to_L{lt:03d}.safetensors"
            sha = save_map(out / name, m, dtype)
            entries.append({"layer_source": m.layer_source, "layer_target": lt, "file": name, "sha256": sha,
                            "quality": m.header["quality"],
                            **({"layers_source": list(m.layers_source)} if len(m.layers_source) > 1 else {})})
        index = {"format": FORMAT + "set", "format_version": FORMAT_VERSION, "method": self.method,
                 "source": self.source, "target": self.target, "settings": self.header["settings"],
                 "data": self.header["data"], "stf_jax": self.header["stf_jax"], "maps": entries}
        atomic_write_bytes(out / SET_FILE, (json.dumps(index, indent=1) + "\n").encode())
        listed = {e["file"] for e in entries}
        for old in out.glob("map_L*_to_L*.safetensors"):
            if old.name not in listed:
                old.unlink()
        self.path = out
        return out


SHIPPED_PREFIX = "shipped:"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "maps"


def shipped_map_sets() -> list[str]:
    """Names of the map sets installed with the package ("smollm2-135m->gemma3-270m", ...)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name.replace("__", "->") for p in SHIPPED_DIR.iterdir() if (p / SET_FILE).is_file())


def shipped_path(name: str) -> Path:
    """The directory of a shipped map set, by name ("shipped:SOURCE->TARGET" or "SOURCE->TARGET")."""
    name = name[len(SHIPPED_PREFIX):] if name.startswith(SHIPPED_PREFIX) else name
    known = shipped_map_sets()
    if name not in known:
        raise MapFileError(f"no shipped map set {name!r}; installed: {known or 'none'} "
                           "(or give a map-set directory)")
    return SHIPPED_DIR / name.replace("->", "__")


def load_map_set(path: str | Path) -> MapSet:
    """A map-set directory, a single map file (as a set of one), or a shipped set by name
    ("shipped:smollm2-135m->gemma3-270m")."""
    if isinstance(path, str) and path.startswith(SHIPPED_PREFIX):
        path = shipped_path(path)
    path = Path(path)
    if path.is_file():
        m = load_layer_map(path)
        return MapSet({m.layer_target: m}, path)
    index_path = path / SET_FILE
    if not index_path.is_file():
        raise MapFileError(f"{path}: no {SET_FILE} (not a map set; make one with python -m stf_jax.transfer fit)")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MapFileError(f"{index_path}: corrupt map-set index ({exc})") from None
    if not isinstance(index, dict):
        raise MapFileError(f"{index_path}: the map-set index is a {type(index).__name__}, not an object; refit the "
                           "map set")
    if index.get("format") != FORMAT + "set":
        raise MapFileError(f"{index_path}: not an stf_jax map set (format {index.get('format')!r})")
    if not isinstance(index.get("format_version"), int) or index["format_version"] > FORMAT_VERSION:
        raise MapFileError(f"{index_path}: map-set format version {index.get('format_version')!r} is newer than "
                           f"this stf_jax reads ({FORMAT_VERSION}); upgrade stf_jax")
    _check_schema(index, _INDEX_SCHEMA, str(index_path), "map-set index")
    entries = index["maps"]
    if not all(isinstance(e, dict) for e in entries):
        raise MapFileError(f"{index_path}: 'maps' must be a list of objects")
    out = {}
    for entry in entries:
        name = entry.get("file", "")
        if not isinstance(name, str) or not name or Path(name).name != name:  # a file inside the set, never elsewhere
            raise MapFileError(f"{index_path}: bad map file name {name!r}")
        m = load_layer_map(path / name)
        if file_sha256(path / name) != entry.get("sha256"):
            raise MapFileError(f"{path / name}: checksum differs from {SET_FILE} (truncated or edited); refit the map set")
        for key, got in (("layer_source", m.layer_source), ("layer_target", m.layer_target)):
            given = entry.get(key, got)
            if isinstance(given, bool) or not isinstance(given, int) or given != got:
                raise MapFileError(f"{index_path}: {name}: {key} {given!r} is not the map file's ({got}); restore or "
                                   "refit the map set")
        if m.layer_target in out:
            raise MapFileError(f"{index_path}: two maps for target layer {m.layer_target} ({name} and another); "
                               "a map set has one map per target layer")
        out[m.layer_target] = m
    if not out:
        raise MapFileError(f"{index_path}: the map set holds no maps")
    check_consistent(out, index, str(index_path))
    return MapSet(out, path)


_IDENTITY = ("name", "config_hash", "d_model", "n_layers")


def check_consistent(layer_maps: dict[int, LayerMap], index: dict, where: str) -> None:
    """One source and one target model for the set and every map in it (name, config_hash, d_model,
    n_layers): a map for other models, or for the reverse direction, does not load into a set."""
    for side in ("source", "target"):
        want = index.get(side)
        if not isinstance(want, dict):
            raise MapFileError(f"{where}: no {side!r} model record")
        for lt, m in layer_maps.items():
            got = m.header.get(side) or {}
            diff = [k for k in _IDENTITY if k in want and got.get(k) != want[k]]
            if diff:
                raise MapFileError(f"{where}: the map for target layer {lt} has another {side} model ({diff[0]} "
                                   f"{got.get(diff[0])!r}, the set's is {want[diff[0]]!r}); refit the map set")
