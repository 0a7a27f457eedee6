"""The steering-vector file format: llama.cpp control-vector GGUF, safetensors, and bare .npy vectors.

One writer (`write_vector_file`) and one reader (`read_vector_file`) for every stage; users hold the
result as a `stf_jax.SteeringVector` (`core.vector`), which calls them.

Both formats hold F32 1-D tensors named `direction.{i}` where i is the 0-based decoder block whose
output is steered, the convention of repeng's `ControlVector.export_gguf` and llama.cpp's
`--control-vector`. stf_jax indexes layers as Hugging Face `hidden_states` (hidden_states[i+1] is
the output of block i), so HF layer L is stored as `direction.{L-1}`.

llama.cpp (`common_control_vector_load_one` in common/common.cpp) refuses a whole file that has a
`direction.0` tensor ("invalid (zero) direction tensor layer index"): its control-vector buffer
starts at block 1 (`llama_adapter_cvec` in src/llama-adapter.cpp keeps no tensor for block 0), so
block 0's output (HF layer 1) cannot be steered there. The GGUF exporter therefore refuses HF
layer 1; the safetensors exporter allows it. HF layer 0 (the embeddings, which no block produces)
cannot be written in either format.

Besides `general.architecture = "controlvector"`, `controlvector.model_hint` and
`controlvector.layer_count` (all llama.cpp and repeng write or read), every file carries
`stf_jax.*` string keys (layer convention, operation, models, transfer method, trait, norms), so
the file says by itself what its numbers mean. safetensors metadata is str -> str, so the same
keys are written there, with layer_count as a decimal string.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import SteeringInputError
from .atomic import atomic_path, atomic_save_tensors

ARCH = "controlvector"
FORMAT_VERSION = "1"
LAYER_CONVENTION = "hf_hidden_states_index: direction.i steers hidden_states[i+1] (output of block i)"
OPERATIONS = ("additive",)
SUFFIXES = (".gguf", ".safetensors")  # what a control vector is written as
READ_SUFFIXES = (*SUFFIXES, ".npy")  # what a vector is read from
UNKNOWN = "unknown"
_DIRECTION = re.compile(r"direction\.(\d+)")
_UNIT_TOL = 1e-4
# Keys derived from the vectors themselves; a caller may repeat them only with the same value.
DERIVED_KEYS = ("layer_convention", "normalization", "norms", "d_model", "format_version", "version")


class HasDirections:
    """`layers` and `d_model` of anything holding `directions` {HF layer: [d_model]} (files and vectors)."""

    directions: dict[int, np.ndarray]

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def d_model(self) -> int:
        return next(iter(self.directions.values())).shape[0]


@dataclasses.dataclass(frozen=True)
class VectorFile(HasDirections):
    """What a vector file holds: directions keyed by HF hidden-state layer, as stored (F32), and its keys."""

    directions: dict[int, np.ndarray]
    model_hint: str
    metadata: dict[str, str]


def direction_name(hf_layer: int) -> str:
    """The tensor name of HF layer L: `direction.{L-1}` (hidden_states[i+1] is block i's output)."""
    return f"direction.{hf_layer - 1}"


def _check_format(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise SteeringInputError(f"{path}: unknown format {path.suffix!r}; name the file *.gguf (llama.cpp control "
                         "vector) or *.safetensors")
    return path.suffix


class VectorMismatchError(SteeringInputError):
    """Two vectors (or a vector and a model) that do not belong together: other model, width or units."""


def checked_directions(directions, *, first_layer: int = 0, nonzero: bool = False,
                       fmt: str | None = None) -> dict[int, np.ndarray]:
    """Validated F32 copies in layer order: integer HF layers >= `first_layer`, one real 1-D vector each, one
    d_model, finite; `nonzero`: none all zeros; fmt ".gguf": no HF layer 1 (llama.cpp refuses direction.0).
    The one check of {HF layer: vector} maps: SteeringVector (layers >= 0, zeros allowed: v - v) and the
    file writer (layers a block produces, nothing that steers nothing)."""
    if not isinstance(directions, dict) or not directions:
        raise SteeringInputError("no directions: pass {hf_layer: vector [d_model]}, got "
                                 f"{type(directions).__name__ if not isinstance(directions, dict) else 'none'}")
    out: dict[int, np.ndarray] = {}
    d_model = None
    def order(k):  # integer layers in order; anything else after them, to be refused by name
        return (0, int(k), "") if isinstance(k, (int, np.integer)) else (1, 0, str(k))

    for layer in sorted(directions, key=order):
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise SteeringInputError(f"layer {layer!r}: layers are integer HF hidden-state indices")
        layer = int(layer)
        if layer < first_layer:
            raise SteeringInputError(f"layer {layer}: HF hidden-state index {layer} is "
                             f"{'the embedding output, which no block produces' if layer == 0 else 'negative'}; "
                             "a control vector steers a block's output, HF layers >= 1 (resolve negative "
                             "indices against the model's n_layers first)")
        if fmt == ".gguf" and layer == 1:
            raise SteeringInputError("layer 1: HF layer 1 (output of block 0) would be stored as direction.0, which "
                             "llama.cpp rejects (common_control_vector_load_one: 'invalid (zero) direction tensor "
                             "layer index'; its control vectors start at block 1) and then skips the whole file; "
                             "steer HF layer >= 2, or export to .safetensors, which can hold it")
        v = np.asarray(directions[layer])
        if v.ndim != 1:
            raise SteeringInputError(f"layer {layer}: a direction is one vector [d_model], got shape {v.shape}")
        if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise SteeringInputError(f"layer {layer}: dtype {v.dtype} is not numeric")
        v = np.ascontiguousarray(v, dtype=np.float32)
        if d_model is None:
            d_model = v.shape[0]
        elif v.shape[0] != d_model:
            raise VectorMismatchError(f"layer {layer}: d_model {v.shape[0]} differs from {d_model} of layer "
                                      f"{min(out)}; one vector belongs to one model (transfer them to one model "
                                      "first)")
        if not np.isfinite(v).all():
            raise SteeringInputError(f"layer {layer}: the vector has {int((~np.isfinite(v)).sum())} NaN/inf entries; "
                             "fix its source (e.g. an empty trait selection or a failed transfer)")
        if nonzero and not v.any():
            raise SteeringInputError(f"layer {layer}: the vector is all zeros, which steers nothing; check its source")
        out[layer] = v
    return out


def vector_metadata(directions: dict[int, np.ndarray], user: dict[str, str] | None) -> dict[str, str]:
    """The stf_jax.* keys: caller's (bare or `stf_jax.`-prefixed) plus those derived from the vectors."""
    from .. import __version__

    given: dict[str, str] = {}
    for key, value in (user or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SteeringInputError(f"metadata {key!r}: {value!r}: keys and values must be str (safetensors and the "
                             "GGUF keys written here are str -> str); convert with str() or json.dumps")
        bare = key.removeprefix("stf_jax.")
        if key.startswith(("general.", f"{ARCH}.")):
            raise SteeringInputError(f"metadata {key!r}: general.* and {ARCH}.* are written by the exporter; use model_hint=")
        given[bare] = value
    norms = {layer: float(np.linalg.norm(v.astype(np.float64))) for layer, v in directions.items()}
    unit = all(abs(n - 1.0) <= _UNIT_TOL for n in norms.values())
    derived = {
        "layer_convention": LAYER_CONVENTION,
        "normalization": "unit" if unit else "none",
        "norms": json.dumps({str(k): round(n, 6) for k, n in norms.items()}),
        "d_model": str(next(iter(directions.values())).shape[0]),
        "format_version": FORMAT_VERSION,
        "version": __version__,
    }
    for key in DERIVED_KEYS:
        if key in given and given[key] != derived[key]:
            raise SteeringInputError(f"metadata stf_jax.{key} = {given[key]!r} disagrees with the vectors "
                             f"({derived[key]!r}); it is derived on export, drop it from metadata")
    source = given.get("source_model", UNKNOWN)
    target = given.get("target_model", source)
    method = given.get("transfer_method")
    if method is None:
        if target != source:
            raise SteeringInputError(f"target_model {target!r} differs from source_model {source!r}: say how the vector "
                             "was transferred with metadata transfer_method (e.g. 'procrustes'), or 'native'")
        method = "native"
    operation = given.get("operation", "additive")
    if operation not in OPERATIONS:
        raise SteeringInputError(f"operation {operation!r}: llama.cpp control vectors are added to the block output; "
                         f"only {OPERATIONS} can be exported")
    meta = {**given, "operation": operation, "source_model": source, "target_model": target,
            "transfer_method": method, "trait": given.get("trait", UNKNOWN),
            "scale": given.get("scale", "1.0 (stored as computed; llama.cpp adds strength * direction, so the "
                                        "strength is in residual-stream units: stf_jax --alpha a with --scale "
                                        "mean-norm corresponds to strength a * mean |h| at that layer)"),
            **derived}
    return {f"stf_jax.{k}": v for k, v in sorted(meta.items())}


def write_vector_file(path: str | Path, directions: dict[int, np.ndarray], *, model_hint: str,
                          metadata: dict[str, str] | None = None) -> Path:
    """Write `directions` ({HF layer: [d_model] vector}) as `direction.{layer-1}` F32 tensors.

    The suffix picks the format: `.gguf` is a llama.cpp control vector (llama-completion/llama-server
    `--control-vector FILE`, `--control-vector-scaled FILE:STRENGTH`), `.safetensors` the same
    tensors and keys for Python tools. `model_hint` is the HF model_type family ("llama",
    "gemma3"); llama.cpp does not check it, so it is the reader's only clue which model the
    vectors fit. `metadata` keys (bare or `stf_jax.`-prefixed): source_model, target_model,
    transfer_method (default "native"), trait, operation ("additive"), scale, and any others.
    The write is atomic (temporary name, then rename).
    """
    path = Path(path)
    fmt = _check_format(path)
    if not isinstance(model_hint, str) or not model_hint.strip():
        raise SteeringInputError("model_hint is empty: pass the model's HF model_type (e.g. 'llama', 'gemma3')")
    dirs = checked_directions(directions, first_layer=1, nonzero=True, fmt=fmt)
    meta = {"general.architecture": ARCH, f"{ARCH}.model_hint": model_hint,
            f"{ARCH}.layer_count": str(len(dirs)), **vector_metadata(dirs, metadata)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".safetensors":
        atomic_save_tensors(path, {direction_name(k): v for k, v in dirs.items()}, meta)
        return path
    with atomic_path(path) as tmp:
        _write_gguf(tmp, dirs, meta)
    return path


def _write_gguf(path: Path, dirs: dict[int, np.ndarray], meta: dict[str, str]) -> None:
    """As repeng's export_gguf: arch "controlvector", model_hint, uint32 layer_count, then tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), ARCH)  # writes general.architecture itself
    writer.add_string(f"{ARCH}.model_hint", meta[f"{ARCH}.model_hint"])
    writer.add_uint32(f"{ARCH}.layer_count", len(dirs))
    for key, value in meta.items():
        if key.startswith("stf_jax."):
            writer.add_string(key, value)
    for layer, v in dirs.items():
        writer.add_tensor(direction_name(layer), v, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _layer_of(name: str, path: Path) -> int:
    """HF layer of a `direction.{i}` tensor name (i + 1)."""
    match = _DIRECTION.fullmatch(name)
    if not match:
        raise SteeringInputError(f"{path}: tensor {name!r} is not direction.<block index>; a control vector holds only "
                         "direction.* tensors (llama.cpp rejects such a file too)")
    return int(match.group(1)) + 1


def _checked_loaded(path: Path, layer: int, v: np.ndarray, dtype_ok: bool, dirs: dict) -> np.ndarray:
    if not dtype_ok:
        raise SteeringInputError(f"{path}: {direction_name(layer)} is not F32; control vectors are F32 (llama.cpp "
                         "rejects other types); re-export it")
    if v.ndim != 1:
        raise SteeringInputError(f"{path}: {direction_name(layer)} has shape {tuple(v.shape)}, expected [d_model]")
    if layer in dirs:
        raise SteeringInputError(f"{path}: two tensors for {direction_name(layer)}")
    if dirs and v.shape[0] != next(iter(dirs.values())).shape[0]:
        raise SteeringInputError(f"{path}: {direction_name(layer)} has d_model {v.shape[0]}, other directions "
                         f"{next(iter(dirs.values())).shape[0]}")
    return v


def read_control_vector(path: str | Path) -> VectorFile:
    """Read a control vector written here, by repeng or by llama.cpp's cvector-generator.

    Directions come back keyed by HF layer (`direction.{i}` -> i + 1), exactly as stored (F32).
    Files without stf_jax metadata (plain llama.cpp/repeng files) load too; their metadata holds
    only what the file has.
    """
    path = Path(path)
    fmt = _check_format(path)
    if not path.exists():
        raise SteeringInputError(f"{path}: control vector file not found")
    dirs: dict[int, np.ndarray] = {}
    if fmt == ".gguf":
        import gguf

        from .gguf_check import check_gguf

        check_gguf(path)  # bounded pre-scan: a declared count the file cannot hold is refused before reading
        try:
            reader = gguf.GGUFReader(str(path))
            meta = {k: str(f.contents()) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        except Exception as exc:  # the gguf reader raises many kinds of errors on damaged files
            raise SteeringInputError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); "
                                     "re-export or re-download it") from None
        arch = meta.get("general.architecture")
        if arch is not None and arch != ARCH:
            raise SteeringInputError(f"{path}: general.architecture is {arch!r}, not {ARCH!r}: this is a model GGUF, not "
                             "a control vector")
        try:
            tensors = [(t.name, np.array(t.data, dtype=np.float32, copy=True),
                        t.tensor_type == gguf.GGMLQuantizationType.F32) for t in reader.tensors]
        except Exception as exc:  # truncated tensor data
            raise SteeringInputError(f"{path}: damaged GGUF tensor data ({type(exc).__name__}: {exc})") from None
        for name, data, is_f32 in tensors:
            layer = _layer_of(name, path)
            dirs[layer] = _checked_loaded(path, layer, data, is_f32, dirs)
        del reader
    else:
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), "numpy")
        except Exception as exc:  # SafetensorError, OSError: a damaged or non-safetensors file
            raise SteeringInputError(f"{path}: not a readable safetensors file ({exc}); re-export it") from None
        with handle as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())
            if "vectors" in names:
                raise SteeringInputError(f"{path}: an extraction run's layer file (it has 'vectors'), not an exported "
                                 "control vector; read a trait vector from it with stf_jax.extract.trait_vector")
            for name in names:
                layer = _layer_of(name, path)
                v = f.get_tensor(name)
                dirs[layer] = _checked_loaded(path, layer, v, v.dtype == np.float32, dirs)
    if not dirs:
        raise SteeringInputError(f"{path}: no direction.* tensors (not a control vector)")
    count = meta.get(f"{ARCH}.layer_count")
    if count is not None and count != str(len(dirs)):
        warnings.warn(f"{path}: {ARCH}.layer_count is {count} but the file has {len(dirs)} direction tensors",
                      stacklevel=2)
    dirs = dict(sorted(dirs.items()))
    return VectorFile(dirs, meta.get(f"{ARCH}.model_hint", ""), meta)


def is_control_vector_file(path: str | Path) -> bool:
    """A .gguf, or a .safetensors whose tensors are direction.* (a run's layer file has 'vectors')."""
    path = Path(path)
    if path.suffix == ".gguf":
        return True
    if path.suffix != ".safetensors" or not path.exists():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            names = list(f.keys())
    except Exception:  # damaged or not safetensors: not a control vector (its reader says what is wrong)
        return False
    return "vectors" not in names and any(_DIRECTION.fullmatch(n) for n in names)



def read_vector_file(path: str | Path, layer: int | None = None) -> VectorFile:
    """The one reader: a control vector (.gguf from llama.cpp / repeng / stf_jax, or stf_jax .safetensors),
    every direction or only HF `layer`; or a .npy vector [d_model], which records no layer, at `layer`."""
    path = Path(path)
    if path.suffix not in READ_SUFFIXES:
        raise SteeringInputError(f"{path}: unknown vector file type {path.suffix!r}; give a control vector (.gguf, "
                                 ".safetensors) or a .npy vector")
    if not path.is_file():
        raise SteeringInputError(f"{path}: vector file not found")
    if path.suffix == ".npy":
        return VectorFile({_npy_layer(path, layer): _read_npy(path)}, "", {})
    vf = read_control_vector(path)
    if layer is None:
        return vf
    if layer not in vf.directions:
        raise SteeringInputError(f"{path} has no direction for HF layer {layer} ({direction_name(layer)}); it has HF "
                                 f"layers {sorted(vf.directions)}")
    return VectorFile({layer: vf.directions[layer]}, vf.model_hint, vf.metadata)


def _npy_layer(path: Path, layer: int | None) -> int:
    if layer is None:
        raise SteeringInputError(f"{path}: a .npy vector records no layer; give its HF layer (layer=)")
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 1:
        raise SteeringInputError(f"{path}: layer {layer!r} is not an HF block-output index (an integer >= 1)")
    return int(layer)


def _read_npy(path: Path) -> np.ndarray:
    """One finite, non-zero real vector; pickles are refused unread, and so are headers declaring huge shapes."""
    try:
        v = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # numpy's header parser raises many kinds (ValueError, EOFError, SyntaxError,
        # tokenize.TokenError...) on pickles, damaged or empty files and shapes the file lacks
        raise SteeringInputError(f"{path}: not a readable .npy array ({exc})") from None
    if v.ndim != 1 or v.shape[0] > 1 << 20 or not (np.issubdtype(v.dtype, np.floating)
                                                   or np.issubdtype(v.dtype, np.integer)):
        raise SteeringInputError(f"{path}: expected one real vector [d_model], got shape {v.shape} {v.dtype}")
    v = np.array(v, dtype=np.float32)
    if not np.isfinite(v).all():
        raise SteeringInputError(f"{path}: the vector has {int((~np.isfinite(v)).sum())} NaN/inf entries; fix its source")
    if not v.any():
        raise SteeringInputError(f"{path}: the vector is all zeros, which has no direction")
    return v
