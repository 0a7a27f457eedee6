"""The run directory: chunked, atomic, resumable writes and the documented final format.

    RUN/
      manifest.json                 written last: the run is complete when it exists
      run_args.json                 what the run was started with (a rerun must match)
      <model>/layer_<idx>.safetensors   pairs: positive, negative, diff, vectors [n_pairs, d_model]
      <model>/tokens_layer_<idx>.safetensors  corpus: states [n_tokens, d_model], text_index, token_index
      .chunks/<model>/chunk_<i>.safetensors  work in progress (removed once the manifest is written)

Every file is written to a temporary name and renamed, so a run killed at any moment leaves only
complete files; a restart skips every chunk already on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

FORMAT_VERSION = 1


class RunDirError(RuntimeError):
    """The run directory holds a different run (or something that is not a run)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def model_slug(name: str) -> str:
    """A directory name for a model given as a registry name, path or hub id."""
    stem = Path(name).stem if name.endswith(".gguf") else Path(name.rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "model"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def prepare(self, run_args: dict[str, Any], overwrite: bool, is_writer: bool = True) -> bool:
        """Create or reopen the directory. Returns True if the run is already complete.

        A directory started with other arguments is refused unless `overwrite`.
        """
        args_path = self.root / "run_args.json"
        if args_path.exists():
            previous = json.loads(args_path.read_text())
            if previous != run_args:
                if not overwrite:
                    changed = sorted(k for k in set(previous) | set(run_args) if previous.get(k) != run_args.get(k))
                    raise RunDirError(
                        f"{self.root} holds a run started with different arguments (differs in: {', '.join(changed)}); "
                        "use another --out directory, or pass --overwrite to discard it"
                    )
                if is_writer:
                    shutil.rmtree(self.root)
            elif self.manifest_path.exists():
                return True
        elif self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise RunDirError(f"{self.root} exists and is not an stf_jax run directory; choose an empty --out")
        if is_writer:
            self.root.mkdir(parents=True, exist_ok=True)
            if not args_path.exists():
                atomic_write_json(args_path, run_args)
        return False

    def chunk_path(self, slug: str, index: int) -> Path:
        path = self.root / ".chunks" / slug / f"chunk_{index:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def load_chunk(self, slug: str, index: int) -> dict[str, np.ndarray]:
        return load_file(str(self.chunk_path(slug, index)))

    def layer_path(self, slug: str, layer: int, kind: str = "layer") -> Path:
        path = self.root / slug / f"{kind}_{layer:03d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finish(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)
        shutil.rmtree(self.root / ".chunks", ignore_errors=True)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no manifest.json (not a finished extraction run)")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RunDirError(f"{path}: format version {manifest.get('format_version')} (this stf_jax reads {FORMAT_VERSION})")
    return manifest


def load_layer(run_dir: str | Path, model: str, layer: int) -> dict[str, np.ndarray]:
    """One model's arrays at one HF layer index of a finished run (`model` as named in the manifest)."""
    manifest = read_manifest(run_dir)
    for entry in manifest["models"]:
        if model in (entry["name"], entry["slug"]):
            if str(layer) not in entry["files"]:
                raise KeyError(f"layer {layer} was not extracted for {model}; extracted: {sorted(map(int, entry['files']))}")
            return load_file(str(Path(run_dir) / entry["files"][str(layer)]))
    raise KeyError(f"model {model!r} is not in {run_dir}; it has {[e['name'] for e in manifest['models']]}")
