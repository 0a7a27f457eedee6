"""Atomic file writes: a file is either its old content or its complete new content, never a torn mix.

Every writer in stf_jax (run directories, map sets, control vectors, results, datasets) goes through
`atomic_write_bytes` (or `atomic_path`, for libraries that insist on writing a path themselves): write to
a temporary name beside the target, fsync, rename, fsync the directory. A process killed at any moment
leaves the old file or the new one, and at worst a `.NAME.tmpPID` that nothing reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def tmp_path(path: Path) -> Path:
    """The temporary sibling a write goes through: hidden, and unique to this process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; on success it is fsynced and renamed onto
    `path` (and the directory fsynced); on any failure it is removed and `path` is untouched."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, **kw) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, **kw) + "\n").encode())


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors serialization with a canonical header (sorted keys, compact): equal arrays and metadata
    give equal bytes in every process (the library's header order varies from process to process)."""
    from safetensors.numpy import save

    raw = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def atomic_save_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically (canonical header); returns its sha256."""
    data = safetensors_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
