"""The run directory: chunked, atomic, resumable writes and the documented final format.

    RUN/
      manifest.json                 written last: the run is complete when it exists (and its checksums hold)
      run_args.json                 what the run was started with (a rerun must match)
      pairs.jsonl                   pairs runs: the pair texts, in row order (the run is self-contained)
      <model>/layer_<idx>.safetensors   pairs: positive, negative, diff, vectors [n_pairs, d_model]
      <model>/tokens_layer_<idx>.safetensors  corpus: states [n_tokens, d_model], text_index, token_index
      .chunks/<model>/chunk_<i>.safetensors  work in progress (removed once the manifest is written)
      .lock                         while a writer runs: its pid and host (a second writer is refused)

Every file is written to a temporary name and renamed, so a run killed at any moment leaves only
complete files; a restart skips every chunk already on disk. Safetensors headers are written with sorted
keys, so the same arrays always give the same bytes. The manifest records the sha256 of every output
file (`checksums`); a damaged run is recomputed on rerun and reported on load.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from safetensors.numpy import load_file

from ..core.atomic import atomic_write_json, file_sha256
from ..errors import UserError
from ..safe_paths import inside, is_safe_name, safe_name

FORMAT_VERSION = 1
PAIRS_FILE = "pairs.jsonl"


class RunDirError(UserError, RuntimeError):
    """The run directory holds a different run (or something that is not a run)."""


class RunNotFoundError(RunDirError, FileNotFoundError):
    """No finished run where one was expected."""


class DamagedRunError(RunDirError):
    """A file of a finished run is truncated, corrupt or not the file the manifest recorded."""


class LayerNotFoundError(RunDirError, KeyError):
    """A model or layer that the run does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file (None if it is): cheap, reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes)"
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, 100_000_000):
                return f"truncated or not safetensors (header of {n} bytes in a {size}-byte file)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + n + end:
            return f"truncated ({size} bytes, the header describes {8 + n + end})"
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"not a valid safetensors file ({type(e).__name__})"
    return None


def load_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """safetensors.numpy.load_file, with a damaged file reported by name (DamagedRunError)."""
    path = Path(path)
    problem = safetensors_problem(path)
    if problem is None:
        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError and friends: a damaged file
            problem = f"unreadable ({type(e).__name__}: {e})"
    raise DamagedRunError(f"{path}: {problem}; rerun the extraction with the same arguments to recompute it")


def model_slug(name: str) -> str:
    """A directory name for a model given as a registry name, path or hub id (see safe_paths.safe_name)."""
    stem = Path(name).stem if name.endswith(".gguf") else Path(name.rstrip("/")).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    return slug if is_safe_name(slug) else safe_name(name, "model name")


def model_hint(entry: dict) -> str:
    """A manifest model entry's HF model_type, what llama.cpp and repeng compare as a control vector's model
    hint (runs from before it was recorded: the decoder family)."""
    return entry.get("model_type") or entry.get("family", "")


def pair_tag(source: str, target: str) -> str:
    """`<source slug>__to__<target slug>`: the file-name stem of a directed model pair (models given as paths
    or hub ids included; the slugs are safe names)."""
    return f"{model_slug(source)}__to__{model_slug(target)}"


def read_json_file(path: Path, what: str) -> Any:
    """JSON from a file the run wrote; a truncated or edited file is a DamagedRunError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedRunError(f"{path}: {what} is damaged (not valid JSON: {e}); rerun the extraction with the same "
                              "arguments to recompute it, or pass overwrite=") from None


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def prepare(self, run_args: dict[str, Any], overwrite: bool, is_writer: bool = True, log=None) -> bool:
        """Create or reopen the directory. Returns True if the run is already complete (and intact).

        A directory started with other arguments is refused unless `overwrite`. A finished run whose manifest
        or output files are damaged is reopened for recomputation (reported through `log`)."""
        args_path = self.root / "run_args.json"
        if args_path.exists():
            try:
                previous = read_json_file(args_path, "run_args.json")
            except DamagedRunError:
                if not overwrite:
                    raise
                previous = None
            if previous != run_args:
                if not overwrite:
                    changed = sorted(k for k in set(previous) | set(run_args) if previous.get(k) != run_args.get(k))
                    raise RunDirError(
                        f"{self.root} holds a run started with different arguments (differs in: {', '.join(changed)}); "
                        "use another out= directory, or pass overwrite= to discard it"
                    )
                if is_writer:
                    self._clear()
            elif self.manifest_path.exists():
                problems = self.verify()
                if not problems:
                    return True
                if is_writer:
                    if log:
                        log(f"warning: {self.root}: finished run is damaged ({'; '.join(problems[:3])}"
                            f"{'; …' if len(problems) > 3 else ''}); recomputing")
                    self.manifest_path.unlink(missing_ok=True)
        elif self.root.exists() and any(p.name != ".lock" for p in self.root.iterdir()) and not overwrite:
            raise RunDirError(f"{self.root} exists and is not an stf_jax run directory; choose an empty out=")
        if is_writer:
            self.root.mkdir(parents=True, exist_ok=True)
            if not args_path.exists():
                atomic_write_json(args_path, run_args)
        return False

    def _clear(self) -> None:
        """Everything but the lock (held by this writer)."""
        for p in self.root.iterdir():
            if p.name == ".lock":
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def verify(self) -> list[str]:
        """Problems of a finished run: an unreadable manifest, missing, truncated or altered files."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            assert isinstance(manifest, dict) and isinstance(manifest.get("models"), list)
        except (OSError, UnicodeDecodeError, ValueError, AssertionError):
            return ["manifest.json is not a valid manifest"]
        return verify_files(self.root, manifest)

    def chunk_path(self, slug: str, index: int) -> Path:
        path = inside(self.root, Path(".chunks") / slug / f"chunk_{index:05d}.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def load_chunk(self, slug: str, index: int) -> dict[str, np.ndarray]:
        return load_tensors(self.chunk_path(slug, index))

    def chunk_ok(self, slug: str, index: int) -> bool:
        path = self.root / ".chunks" / slug / f"chunk_{index:05d}.safetensors"
        return path.exists() and safetensors_problem(path) is None

    def layer_path(self, slug: str, layer: int, kind: str = "layer") -> Path:
        path = inside(self.root, Path(slug) / f"{kind}_{layer:03d}.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finish(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)
        shutil.rmtree(self.root / ".chunks", ignore_errors=True)


def verify_files(root: Path, manifest: dict[str, Any], only: set[str] | None = None) -> list[str]:
    """Check the files a manifest lists: sha256 where it records `checksums` (runs written since checksums
    were added), else that each safetensors file is complete. `only`: these relative paths."""
    problems = []
    checksums = manifest.get("checksums") or {}
    listed = set(checksums)
    for m in manifest.get("models", []):
        listed |= set((m.get("files") or {}).values())
    for rel in sorted(listed):
        if only is not None and rel not in only:
            continue
        path = Path(root) / rel
        if not path.exists():
            problems.append(f"{rel} is missing")
        elif rel in checksums:
            if _cached_sha256(path) != checksums[rel]:
                problems.append(f"{rel} does not match its checksum (truncated or altered)")
        elif rel.endswith(".safetensors") and (why := safetensors_problem(path)):
            problems.append(f"{rel} is {why}")
    return problems


_VERIFIED: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process (a sweep loads every layer)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_sha256(path)
    return _VERIFIED[key]


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        hint = " (the extraction has not finished: rerun it with the same arguments)" if (
            Path(run_dir) / "run_args.json").exists() else ""
        raise RunNotFoundError(f"{run_dir}: no manifest.json (not a finished extraction run){hint}")
    manifest = read_json_file(path, "manifest.json")
    if not isinstance(manifest, dict):
        raise DamagedRunError(f"{path}: not a manifest (a JSON object was expected)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RunDirError(f"{path}: format version {manifest.get('format_version')} (this stf_jax reads {FORMAT_VERSION})")
    return manifest


def layer_file(run_dir: str | Path, model: str, layer: int | str) -> Path:
    """The file of one model's arrays at one layer of a finished run, checked against the manifest's
    checksum (runs that record one). `model` as named in the manifest or its slug; `layer` an HF index or
    any one-layer spec of `extract.layers`, e.g. -6, resolved for that model."""
    from ..core.layers import resolve_layer

    manifest = read_manifest(run_dir)
    for entry in manifest["models"]:
        if model in (entry["name"], entry["slug"]):
            if "n_layers" in entry:  # -6, 0.67, "12", out of range: resolved and checked for this model
                layer = resolve_layer(layer, int(entry["n_layers"]), model)
            if str(layer) not in entry["files"]:
                raise LayerNotFoundError(f"layer {layer} was not extracted for {model} in {run_dir}; extracted: "
                                         f"{sorted(map(int, entry['files']))}")
            rel = entry["files"][str(layer)]
            problems = verify_files(Path(run_dir), manifest, only={rel})
            if problems:
                raise DamagedRunError(f"{run_dir}: {problems[0]}; rerun the extraction with the same arguments to "
                                      "recompute it")
            return Path(run_dir) / rel
    raise LayerNotFoundError(f"model {model!r} is not in {run_dir}; it has {[e['name'] for e in manifest['models']]}")


def load_layer(run_dir: str | Path, model: str, layer: int | str) -> dict[str, np.ndarray]:
    """One model's arrays at one layer of a finished run (`layer_file`, read whole)."""
    return load_tensors(layer_file(run_dir, model, layer))


def layer_row_chunks(run_dir: str | Path, model: str, layer: int | str, names: Sequence[str],
                     rows: int = 65536) -> Iterator[dict[str, np.ndarray]]:
    """The arrays `names` of one layer file, `rows` rows at a time (bounded memory for token-state runs of
    any size; the file is checksum-verified first, as by `load_layer`)."""
    from safetensors import safe_open

    path = layer_file(run_dir, model, layer)
    try:
        with safe_open(str(path), "numpy") as f:
            n = f.get_slice(names[0]).get_shape()[0]
            for a in range(0, n, rows):
                yield {k: f.get_slice(k)[a:min(a + rows, n)] for k in names}
    except (OSError, ValueError, KeyError) as e:
        raise DamagedRunError(f"{path}: unreadable ({type(e).__name__}: {e}); rerun the extraction") from None


def load_run_pairs(run_dir: str | Path, manifest: dict[str, Any] | None = None):
    """The pair texts a pairs run was extracted from, in row order (from RUN/pairs.jsonl, checked against
    its recorded sha256), or None for runs written before runs kept their texts."""
    from ..data import load_pairs

    manifest = manifest or read_manifest(run_dir)
    record = manifest.get("pairs_file")
    if not record:
        return None
    path = Path(run_dir) / record["path"]
    if not path.exists():
        raise DamagedRunError(f"{path} is missing (the run's copy of its pair texts); rerun the extraction")
    if file_sha256(path) != record["sha256"]:
        raise DamagedRunError(f"{path} does not match its checksum in manifest.json (edited or truncated); rerun "
                              "the extraction")
    by_id = {p.id: p for p in load_pairs(path)}
    return [by_id[i] for i in manifest["pair_ids"]]


def trait_vector(run_dir: str | Path, model: str, trait: str | None = None, layers: int | str | Sequence = -6):
    """The seed paper's trait vector from a finished pairs run, as a `SteeringVector`: at each layer the mean
    of the pairs' unit difference vectors (of `trait`'s pairs when given), normalised; typical-|h| units.
    `layers`: any layer spec the run has (-6, "all", [12, 14])."""
    from ..core.layers import resolve_layers
    from ..core.vector import SteeringVector

    manifest = read_manifest(run_dir)
    entry = next((e for e in manifest["models"] if model in (e["name"], e["slug"])), None)
    if entry is None:
        raise LayerNotFoundError(f"model {model!r} is not in {run_dir}; it has {[e['name'] for e in manifest['models']]}")
    n_layers = int(entry.get("n_layers", max(map(int, entry["files"]))))
    wanted = resolve_layers(layers, n_layers)
    rows = _trait_rows(run_dir, manifest, trait)
    dirs = {}
    for lay in wanted:
        path = layer_file(run_dir, entry["name"], lay)
        dirs[lay] = _trait_direction(_vectors(path), rows, path)
    return SteeringVector(dirs, model=entry["name"], model_type=model_hint(entry), trait=trait or "all",
                          method="mean_diff", units="typical_norm", provenance={"run": Path(run_dir).name})


def layer_file_vector(path: str | Path, trait: str | None = None, layer: int | None = None):
    """`trait_vector` at one layer, from the path of a run's `<model>/layer_<idx>.safetensors`."""
    path = Path(path)
    run_dir = path.parent.parent
    try:
        manifest = read_manifest(run_dir)
    except RunDirError:
        manifest = None
    file_layer = int(path.stem.split("_")[-1]) if re.fullmatch(r"layer_\d+", path.stem) else None
    if layer is not None and file_layer is not None and layer != file_layer:
        raise LayerNotFoundError(f"{path} holds HF layer {file_layer}, not {layer}; use the run's "
                                 f"layer_{layer:03d}.safetensors, or drop the layer")
    entry = next((e for e in (manifest or {}).get("models", []) if e["slug"] == path.parent.name), None)
    if entry is not None:
        return trait_vector(run_dir, entry["name"], trait, file_layer if file_layer is not None else layer)
    if trait:
        raise RunDirError(f"{path}: no run manifest in {run_dir}; it is needed to select the pairs of trait {trait!r}")
    from ..core.vector import SteeringVector

    lay = file_layer if file_layer is not None else layer
    if lay is None:
        raise LayerNotFoundError(f"{path}: the file records no layer; give its HF layer")
    return SteeringVector({lay: _trait_direction(_vectors(path), None, path)}, trait="all",
                          method="mean_diff", units="typical_norm")


def _vectors(path: Path) -> np.ndarray:
    tensors = load_tensors(path)
    if "vectors" not in tensors:
        raise RunDirError(f"{path}: no 'vectors' array and no direction.* tensors (expected an extraction run's "
                          "layer file or an exported control vector)")
    return tensors["vectors"]


def _trait_rows(run_dir, manifest: dict[str, Any], trait: str | None) -> np.ndarray | None:
    if not trait:
        return None
    traits = np.asarray(manifest.get("traits", []))
    if trait not in set(traits.tolist()):
        raise LayerNotFoundError(f"trait {trait!r} is not in {run_dir}; it has {sorted(set(traits.tolist()))}")
    return traits == trait


def unit_mean(vectors: np.ndarray) -> np.ndarray | None:
    """The seed paper's trait vector: the mean of the pairs' unit difference vectors [n, D], normalised (None
    when that mean is zero or not finite). The run path and `train_vector`'s mean_diff both use it."""
    v = vectors.mean(axis=0)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or norm == 0:
        return None
    return (v / norm).astype(np.float32)


def _trait_direction(vectors: np.ndarray, rows: np.ndarray | None, path: Path) -> np.ndarray:
    v = unit_mean(vectors if rows is None else vectors[rows])
    if v is None:
        raise DamagedRunError(f"{path}: the trait vector is zero or not finite")
    return v
