"""The input side of `transfer apply`: a vector library listed, named and read before anything heavy.

Reading comes first so that a bad input (a GGUF memory bomb, a non-UTF-8 name, two inputs that would be
written to one output) is refused in a fraction of a second, before JAX is imported or a map set is
loaded. This module imports only the floor (numpy, `core`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

from ..core.vector import SteeringVector
from ..errors import UserError

INPUT_SUFFIXES = (".gguf", ".safetensors", ".npy")
OUTPUT_FORMATS = ("gguf", "safetensors")


class TransferInputError(UserError, ValueError):
    """A vector that cannot be carried by the given map set (width, layers, values, file type)."""


@dataclasses.dataclass(frozen=True)
class Library:
    """Input files, the output name of each (relative to the output directory), and the vectors read."""
    files: list[Path]
    outs: list[Path]
    vectors: list[SteeringVector]


def library_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Input paths, with directories expanded to the vector files under them (sorted; a vector library)."""
    out = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in INPUT_SUFFIXES)
            if not found:
                raise TransferInputError(f"{p}: no .gguf/.safetensors/.npy vector files in this directory")
            out.extend(found)
        elif not p.exists():
            raise TransferInputError(f"{p}: no such file or directory")
        else:
            out.append(p)
    return out


def read_library(inputs: Sequence[str | Path], out_dir: str | Path, layer: int | None = None,
                 fmt: str = "gguf") -> Library:
    """List, name and read every input; refused before any work: names that are not text, and two inputs
    that would be written to one output file (one output per input, never one over another)."""
    if fmt not in OUTPUT_FORMATS:
        raise TransferInputError(f"format {fmt!r}: choose gguf (llama.cpp) or safetensors")
    files, rel = [], []
    for p in map(Path, inputs):
        found = library_files([p])
        files.extend(found)
        rel.extend(q.relative_to(p) if p.is_dir() else Path(q.name) for q in found)
    for f in files:  # names become output paths and file metadata: both need text
        try:
            str(f).encode("utf-8")
        except UnicodeEncodeError:
            raise TransferInputError(f"{str(f).encode('utf-8', 'backslashreplace').decode()}: the file name is not "
                                     "valid UTF-8; rename it") from None
    outs = [r.with_suffix("." + fmt) for r in rel]
    first: dict[Path, Path] = {}
    for f, dest in zip(files, outs):
        if dest in first:
            raise TransferInputError(f"{f} and {first[dest]} would both be written as {Path(out_dir) / dest}; rename "
                                     "one, or carry them in separate calls into different directories")
        first[dest] = f
    return Library(files, outs, [SteeringVector.load(f, layer) for f in files])
