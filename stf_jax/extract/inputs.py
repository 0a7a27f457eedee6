"""Reading extraction inputs: contrast pairs (shipped, files, HF datasets) and text corpora."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..data import ContrastPair, PairFormatError, PairSourceError, load_pairs
from ..data.pairs import MissingDependencyError, text_lines


def read_pairs(source: str, traits: Sequence[str] | None = None, per_trait: int | None = None,
               split: str | None = None, seed: int = 0) -> tuple[list[ContrastPair], str]:
    """(pairs, dataset name). `source`: "shipped", a JSONL/CSV/Parquet path or directory, or
    "hf:NAME[:SPLIT]" for a Hugging Face dataset with id/trait/positive/negative columns."""
    if source.startswith("hf:"):
        pairs = _hf_pairs(source[3:])
        if traits:
            pairs = [p for p in pairs if p.trait in set(traits)]
    else:
        pairs = load_pairs(source, traits=traits)
    if split:
        from ..data import split_pairs

        chosen = set(getattr(split_pairs(pairs, seed=seed), split))
        pairs = [p for p in pairs if p.id in chosen]
    if per_trait:
        counts: dict[str, int] = {}
        kept = []
        for p in pairs:
            if counts.get(p.trait, 0) < per_trait:
                kept.append(p)
                counts[p.trait] = counts.get(p.trait, 0) + 1
        pairs = kept
    name = source if source.startswith("hf:") or source == "shipped" else Path(source).name
    return pairs, name


def _hf_pairs(spec: str) -> list[ContrastPair]:
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("reading hf:DATASET needs the `datasets` package: pip install datasets") from None
    name, _, split = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:
        raise PairSourceError(f"Hugging Face dataset {name!r} could not be loaded from the cache or hub: {e}") from None
    missing = {"id", "trait", "positive", "negative"} - set(ds.column_names)
    if missing:
        raise PairFormatError(f"dataset {name!r} lacks column(s) {sorted(missing)}; it has {ds.column_names}")
    return [ContrastPair(id=str(r["id"]), trait=r["trait"], positive=r["positive"], negative=r["negative"],
                         prompt=r.get("prompt") or "", source=f"hf:{name}") for r in ds]


def read_corpus(path: str | Path) -> tuple[list[str], int]:
    """(texts, skipped empty lines). .jsonl -> the `text` field of each line; otherwise one text per line."""
    path = Path(path)
    if not path.is_file():
        raise PairSourceError(f"{path}: corpus file not found")
    texts, skipped = [], 0
    for lineno, line in text_lines(path):
        if path.suffix == ".jsonl":
            if not line.strip():
                skipped += 1
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise PairFormatError(f"{path}:{lineno}: malformed JSON ({getattr(e, 'msg', type(e).__name__)})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise PairFormatError(f"{path}:{lineno}: a corpus JSONL line needs a 'text' field holding a string")
            text = record["text"]
        else:
            text = line
        if not text.strip():
            skipped += 1
            continue
        texts.append(text)
    return texts, skipped
