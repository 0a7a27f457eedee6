"""Loading and saving contrast pairs: the shipped set, JSONL, CSV and Parquet.

Every loader returns pairs sorted by (trait, id), so the same records always come
back in the same order whatever the file layout.
Malformed input raises ``PairFormatError`` naming the file and line (row for
Parquet) of the offending record.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stf_jax.data.schema import SPLITS, ContrastPair
from ..errors import UserError

SHIPPED_DIR = Path(__file__).parent / "contrast_pairs"
SHIPPED_NAMES: tuple[str, ...] = ("shipped", "stf-26")
# Every dataset that ships with the package, by name (`--pairs NAME`). Each is a folder of JSONL pair files,
# except "corpus": contrast pairs of two general texts cut at word boundaries (`stf_jax.data.corpus`).
DATASETS: dict[str, str] = {
    "shipped": "contrast_pairs",   # 26 style traits (the paper's stf-26 set)
    "stf-26": "contrast_pairs",
    "ood": "ood_pairs",            # evaluation-only style pairs in other formats (never fitted on)
    "ab": "ab_items",              # A/B multiple-choice behaviour items (Contrastive Activation Addition form)
    "dialogue": "dialogue_pairs",  # dialogue turns that differ in the assistant's last turn
    "corpus": "corpus",            # general text, as pairs of two different texts
}
PAIR_SUFFIXES: tuple[str, ...] = (".jsonl", ".csv", ".parquet")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "trait", "positive", "negative")
OPTIONAL_FIELDS: tuple[str, ...] = ("prompt", "source", "split")


class PairFormatError(UserError, ValueError):
    """A record that cannot become a ContrastPair; the message starts with 'file:line:'."""


class PairSourceError(UserError, FileNotFoundError):
    """No pair data where the argument points (missing file, empty directory, unknown dataset name)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package needed to read the input (pyarrow, datasets) is not installed."""


def load_pairs(name_or_path: str | Path, traits: Sequence[str] | None = None) -> list[ContrastPair]:
    """Load pairs from a shipped dataset (a name in DATASETS: "shipped", "ab", "dialogue", "ood",
    "corpus"), a file, or a directory.

    A directory contributes every .jsonl, .csv and .parquet file directly inside it.
    ``traits`` keeps only those traits; a trait absent from the data is a ValueError
    that lists the traits present. Duplicate ids across all files are an error.
    """
    generated = _named_pairs(str(name_or_path))
    pairs = generated if generated is not None else _dedup_ids(_read_all(_pair_files(name_or_path)))
    if traits is not None:
        available = sorted({pair.trait for pair in pairs})
        unknown = sorted(set(traits) - set(available))
        if unknown:
            raise PairFormatError(f"unknown trait(s) {unknown}; available: {', '.join(available)}")
        wanted = set(traits)
        pairs = [pair for pair in pairs if pair.trait in wanted]
    return sorted(pairs, key=lambda pair: (pair.trait, pair.id))


def save_pairs(pairs: Sequence[ContrastPair], path: str | Path) -> None:
    """Write pairs as JSONL, one record per line, UTF-8 kept readable (atomically: temporary file + rename)."""
    from ..core.atomic import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n" for pair in pairs))


def is_shipped(name_or_path: str | Path) -> bool:
    """Whether the argument names the shipped set rather than a path."""
    return str(name_or_path) in SHIPPED_NAMES


def dataset_dir(name: str) -> Path:
    """The folder of a shipped dataset (a key of DATASETS)."""
    return Path(__file__).parent / DATASETS[name]


# Datasets made rather than read, by name -> a function returning their pairs (`stf_jax.data.corpus`
# registers "corpus"; the package's __init__ imports it, so the entry is there before any load).
GENERATED: dict[str, Callable[[], list[ContrastPair]]] = {}


def _named_pairs(name: str) -> list[ContrastPair] | None:
    """Pairs of a dataset that is generated rather than read (the corpus pairs), else None."""
    make = GENERATED.get(name)
    return make() if make is not None else None


def _pair_files(name_or_path: str | Path) -> list[Path]:
    """Resolve a name or path to the data files to read, in a fixed order."""
    if str(name_or_path) in DATASETS:
        folder = dataset_dir(str(name_or_path))
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise PairSourceError(f"no shipped files for dataset {str(name_or_path)!r} in {folder}; reinstall stf_jax")
        return files
    path = Path(name_or_path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PAIR_SUFFIXES)
        if not files:
            raise PairSourceError(f"{path}: directory holds no {'/'.join(PAIR_SUFFIXES)} files")
        return files
    if path.is_file():
        if path.suffix not in PAIR_SUFFIXES:
            raise PairFormatError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(PAIR_SUFFIXES)}")
        return [path]
    names = ", ".join(dict.fromkeys([*DATASETS, *GENERATED]))
    raise PairSourceError(f"{name_or_path}: no such file or directory, and not a dataset name ({names})")


def _read_all(files: list[Path]) -> Iterator[tuple[ContrastPair, str]]:
    """Every pair of every file, with its 'file:line' location for error messages."""
    readers = {".jsonl": _jsonl_records, ".csv": _csv_records, ".parquet": _parquet_records}
    for path in files:
        for location, record in readers[path.suffix](path):
            yield _to_pair(record, location), location


def _dedup_ids(located: Iterator[tuple[ContrastPair, str]]) -> list[ContrastPair]:
    """Reject a repeated id, naming both places it occurs."""
    first_seen: dict[str, str] = {}
    pairs = []
    for pair, location in located:
        if pair.id in first_seen:
            raise PairFormatError(f"{location}: duplicate id {pair.id!r} (first at {first_seen[pair.id]})")
        first_seen[pair.id] = location
        pairs.append(pair)
    return pairs


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise PairSourceError(f"{path}: cannot read ({error.strerror or error})") from None


def _not_utf8(path: Path, data: bytes, error: UnicodeDecodeError, line_offset: int = 0) -> PairFormatError:
    """'file:line: not UTF-8' for a decode error at byte error.start of data."""
    line = data.count(b"\n", 0, error.start) + 1 + line_offset
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    byte = data[error.start:error.start + 1].hex()
    return PairFormatError(f"{path}:{line}: not UTF-8 text (byte 0x{byte} at column {column}); "
                           "save the file as UTF-8")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file (a BOM is allowed), with a bad byte reported as 'file:line'."""
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for line_number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield line_number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _not_utf8(path, raw, error, line_offset=line_number - 1) from None


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        location = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PairFormatError(f"{location}: malformed JSON ({error.msg} at column {error.colno})") from None
        except (ValueError, RecursionError) as error:  # e.g. an integer of more than 4300 digits, deep nesting
            raise PairFormatError(f"{location}: malformed JSON ({type(error).__name__}: {str(error)[:80]})") from None
        if not isinstance(record, dict):
            raise PairFormatError(f"{location}: expected a JSON object, got {type(record).__name__}")
        yield location, record


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, data, error) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [field for field in REQUIRED_FIELDS if field not in (reader.fieldnames or [])]
        if missing:
            raise PairFormatError(f"{path}:1: header lacks column(s) {missing}")
        for record in reader:
            # line_num is the physical line where the record ended (records may span lines).
            location = f"{path}:{reader.line_num}"
            extra = record.pop(None, None)
            if extra:
                raise PairFormatError(f"{location}: {len(extra)} more field(s) than the header's columns "
                                      "(an unquoted comma?)")
            yield location, {key: value for key, value in record.items() if value != ""}
    except csv.Error as error:
        raise PairFormatError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def _parquet_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError, ValueError, TypeError) as error:
        raise PairFormatError(f"{path}: not a readable Parquet file ({type(error).__name__}: "
                              f"{str(error)[:120]})") from None
    for row_number, record in enumerate(rows, start=1):
        if not isinstance(record, dict):
            raise PairFormatError(f"{path}:row {row_number}: not a record")
        yield f"{path}:row {row_number}", record


def _to_pair(record: dict[str, Any], location: str) -> ContrastPair:
    """Check one raw record against the schema and build the pair."""
    missing = [field for field in REQUIRED_FIELDS if record.get(field) is None]
    if missing:
        raise PairFormatError(f"{location}: missing field(s) {missing}")
    fields = {}
    for field in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise PairFormatError(f"{location}: field {field!r} must be a string, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PairFormatError(f"{location}: field {field!r} holds an unpaired surrogate (a broken \\ud800-style "
                                  "escape); fix the text") from None
        fields[field] = value
    for field in REQUIRED_FIELDS:
        if not fields[field].strip():
            raise PairFormatError(f"{location}: field {field!r} is empty")
    split = fields.get("split") or None
    if split is not None and split not in SPLITS:
        raise PairFormatError(f"{location}: split must be one of {SPLITS}, got {split!r}")
    return ContrastPair(
        id=fields["id"],
        trait=fields["trait"],
        positive=fields["positive"],
        negative=fields["negative"],
        prompt=fields.get("prompt", ""),
        source=fields.get("source", ""),
        split=split,
    )
