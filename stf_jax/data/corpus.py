"""General text as contrast pairs: what a map learns the residual stream from beyond any one trait.

The Linear Representation Transferability paper fits its maps on general text. stf_jax's maps are
fitted on steering vectors (differences of one pooled state), so a corpus enters the same way: a
*corpus pair* is two different texts, each cut at a word boundary, and its vector is the difference of
their last-token states. Across many such pairs the differences span the directions in which text in
general moves the residual stream, not only the 26 style traits, which is what lets a map carry
vectors of kinds it never saw (A/B behaviour items, dialogue turns).

Pairs are deterministic (seeded), drawn within a split (a held-out text only pairs with held-out texts),
and work for any two tokenizers (both models read the same strings).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from stf_jax.data.pairs import GENERATED, PairFormatError, PairSourceError, dataset_dir, text_lines
from stf_jax.data.schema import SPLITS, ContrastPair

CORPUS_TRAIT = "corpus"
MIN_WORDS = 6


@dataclasses.dataclass(frozen=True)
class CorpusText:
    id: str
    text: str
    split: str = "train"


def load_corpus(path: str | Path | None = None) -> list[CorpusText]:
    """Texts of a JSONL corpus (`{"id", "text", "split"?}` per line; a folder: every .jsonl in it), or
    of a plain text file (one text per line, split "train"). Default: the shipped general sample."""
    path = dataset_dir("corpus") if path is None else Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise PairSourceError(f"{path}: no corpus files (.jsonl with a 'text' field, or .txt one text per line)")
    out: list[CorpusText] = []
    for f in files:
        for line_number, line in text_lines(f):
            if not line.strip():
                continue
            out.append(_record(f, line_number, line))
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PairFormatError(f"{path}: duplicate text id {dup!r}")
    return sorted(out, key=lambda t: t.id)


def _record(path: Path, line_number: int, line: str) -> CorpusText:
    where = f"{path}:{line_number}"
    if path.suffix != ".jsonl":
        return CorpusText(f"{path.stem}-{line_number:06d}", line.strip())
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise PairFormatError(f"{where}: malformed JSON ({str(exc)[:80]})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"].strip():
        raise PairFormatError(f"{where}: expected an object with a non-empty string 'text'")
    split = rec.get("split") or "train"
    if split not in SPLITS:
        raise PairFormatError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    return CorpusText(str(rec.get("id") or f"{path.stem}-{line_number:06d}"), rec["text"].strip(), split)


def _cut(text: str, rng: np.random.Generator) -> str:
    """The text up to a random word boundary (at least MIN_WORDS words, or the whole text)."""
    words = text.split(" ")
    if len(words) <= MIN_WORDS:
        return text
    return " ".join(words[:int(rng.integers(MIN_WORDS, len(words) + 1))])


def corpus_pairs(texts: Sequence[CorpusText], per_text: int = 2, seed: int = 0) -> list[ContrastPair]:
    """`per_text` pairs for every text: (a cut of it, a cut of another text of the same split)."""
    rng = np.random.default_rng(seed)
    out = []
    for split in SPLITS:
        group = [t for t in texts if t.split == split]
        if len(group) < 2:
            continue
        for i, t in enumerate(group):
            for c in range(per_text):
                j = int(rng.integers(len(group) - 1))
                other = group[j + (j >= i)]
                pos, neg = _cut(t.text, rng), _cut(other.text, rng)
                if pos == neg:
                    continue
                out.append(ContrastPair(f"corpus-{t.id}-{c}", CORPUS_TRAIT, pos, neg, "", "corpus", split))
    return sorted(out, key=lambda p: p.id)


GENERATED[CORPUS_TRAIT] = lambda: corpus_pairs(load_corpus())  # load_pairs("corpus"), --pairs corpus
