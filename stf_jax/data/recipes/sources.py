"""Finding and reading a public dataset's local copy, in the format it is published in.

A ``DatasetSource`` describes one dataset: its Hugging Face id, the file layouts
it is distributed in (glob patterns, tried in order; the first that matches any
file wins, so a repository holding several versions reads only the preferred
one), and the columns a recipe needs, each with the names it goes by in the
different releases. Rows come back as dicts keyed by the canonical column names.

Where the data is looked for, in order:
1. the path the caller gives (a file, or a directory searched with the patterns);
2. ``$STF_DATASETS_DIR/<name>``;
3. the Hugging Face hub cache, ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``,
   ``~/.cache/huggingface/hub``): files fetched by ``huggingface_hub`` or by
   ``datasets.load_dataset`` for repositories stored as data files;
4. the ``datasets`` Arrow cache, ``$HF_DATASETS_CACHE`` (default
   ``$HF_HOME/datasets``), where ``load_dataset`` keeps prepared splits
   (``org___name/``).
Caches are also searched under the dataset's older ids (``imdb`` for
``stanfordnlp/imdb``).
Nothing is downloaded. If none holds the data, ``SourceNotFoundError`` lists
every place looked at and how to provide the data.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UserError

Row = dict[str, Any]
FileReader = Callable[[Path], Iterator[Row]]


class SourceNotFoundError(UserError, FileNotFoundError):
    """A recipe's dataset is not available locally; the message says where it looked."""


class SourceFormatError(UserError, ValueError):
    """A local file does not have the columns or layout the dataset is published with."""


def read_table(path: Path) -> Iterator[Row]:
    """Rows of a .parquet, .arrow (``datasets`` cache), .csv, .tsv, .jsonl or .jsonl.gz file."""
    name = path.name
    if name.endswith(".parquet"):
        for batch in _pyarrow("parquet", path).ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif name.endswith(".arrow"):
        ipc = _pyarrow("ipc", path)
        with open(path, "rb") as handle:
            for batch in ipc.open_stream(handle):
                yield from batch.to_pylist()
    elif name.endswith((".csv", ".tsv")):
        # Some published cells (whole news articles) exceed csv's 128 KiB default.
        csv.field_size_limit(2**31 - 1)
        with open(path, encoding="utf-8", newline="") as handle:
            if name.endswith(".tsv"):
                # Published TSVs escape nothing: a quote character is part of the text.
                yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                yield from csv.DictReader(handle)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise SourceFormatError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
    else:
        raise SourceFormatError(f"{path}: unsupported file type")


TABLE_PATTERNS: tuple[str, ...] = ("**/*.parquet", "**/*.arrow", "**/*.jsonl", "**/*.jsonl.gz", "**/*.csv", "**/*.tsv")


@dataclass(frozen=True)
class DatasetSource:
    """One public dataset: where it is published, its file layouts and the columns used.

    Attributes:
      name: short name, also the folder name under ``$STF_DATASETS_DIR``.
      hf_id: Hugging Face dataset id ("org/name").
      hf_aliases: older ids of the same dataset ("imdb" for "stanfordnlp/imdb"),
        under which caches made by older library versions are filed.
      columns: canonical column -> the names it has in the known releases.
      patterns: glob patterns for files inside a directory, tried in order.
      readers: file-name suffix -> reader for layouts that are not plain tables
        (matched before the table readers).
      layouts: one line per accepted layout, shown when the data is missing.
    """

    name: str
    hf_id: str
    columns: Mapping[str, tuple[str, ...]]
    hf_aliases: tuple[str, ...] = ()
    patterns: tuple[str, ...] = TABLE_PATTERNS
    readers: Mapping[str, FileReader] = field(default_factory=dict)
    layouts: tuple[str, ...] = ()

    def read_file(self, path: Path) -> Iterator[Row]:
        """Rows of one file with canonical column names; a missing column is a SourceFormatError."""
        reader = next((read for suffix, read in self.readers.items() if path.name.endswith(suffix)), read_table)
        mapping: dict[str, str] | None = None
        for row in reader(path):
            if mapping is None:
                mapping = self._column_mapping(row, path)
            yield {canonical: row.get(actual) for canonical, actual in mapping.items()}

    def _column_mapping(self, row: Row, path: Path) -> dict[str, str]:
        mapping = {}
        for canonical, names in self.columns.items():
            actual = next((name for name in names if name in row), None)
            if actual is None:
                raise SourceFormatError(
                    f"{path}: {self.name} needs a column named {' or '.join(repr(n) for n in names)}; "
                    f"this file has {sorted(row)}"
                )
            mapping[canonical] = actual
        return mapping


def iter_rows(source: DatasetSource, path: str | Path | None = None) -> Iterator[Row]:
    """Every row of the dataset's local copy (see the module docstring for where it looks).

    The files are located now, so a missing source fails here, before any work.
    """
    files = find_files(source, path)
    return (row for file in files for row in source.read_file(file))


def find_files(source: DatasetSource, path: str | Path | None = None) -> list[Path]:
    """The data files to read, from the first location that holds any."""
    looked: list[str] = []
    if path is None and not os.environ.get("STF_DATASETS_DIR"):
        looked.append(f"$STF_DATASETS_DIR/{source.name} (STF_DATASETS_DIR is not set)")
    for location in _locations(source, path):
        files = _matching_files(source, location)
        if files:
            return files
        looked.append(f"{location} ({'no matching files' if location.exists() else 'does not exist'})")
    raise SourceNotFoundError(_missing_message(source, looked))


def _locations(source: DatasetSource, path: str | Path | None) -> list[Path]:
    if path is not None:
        return [Path(path).expanduser()]
    locations = []
    if os.environ.get("STF_DATASETS_DIR"):
        locations.append(Path(os.environ["STF_DATASETS_DIR"]).expanduser() / source.name)
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub")).expanduser()
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", hf_home / "datasets")).expanduser()
    for hf_id in (source.hf_id, *source.hf_aliases):
        hub_repo = hub_cache / ("datasets--" + hf_id.replace("/", "--"))
        snapshots = sorted((hub_repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        locations += snapshots or [hub_repo]
    # ``datasets`` names its folder "org___name" (the bare name for ids without an org).
    locations += [datasets_cache / hf_id.replace("/", "___") for hf_id in (source.hf_id, *source.hf_aliases)]
    return locations


def _matching_files(source: DatasetSource, location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    if not location.is_dir():
        return []
    for pattern in source.patterns:
        # ``datasets`` keeps .map() results as cache-*.arrow beside the prepared splits.
        files = sorted(p for p in location.glob(pattern) if p.is_file() and not p.name.startswith("cache-"))
        if files:
            return files
    return []


def _missing_message(source: DatasetSource, looked: list[str]) -> str:
    lines = [f"dataset {source.name!r} ({source.hf_id}) was not found locally. Looked at:"]
    lines += [f"  - {place}" for place in looked]
    lines.append("Provide it with source= (a file, or a directory holding one of these layouts):")
    lines += [f"  - {layout}" for layout in source.layouts]
    lines.append(
        f"or place it under $STF_DATASETS_DIR/{source.name}/, or fetch "
        f"https://huggingface.co/datasets/{source.hf_id} into the Hugging Face cache."
    )
    return "\n".join(lines)


def _pyarrow(module: str, path: Path) -> Any:
    try:
        if module == "parquet":
            import pyarrow.parquet as loaded
        else:
            import pyarrow.ipc as loaded
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    return loaded
