"""Tokenize once, then group texts by length into a few fixed shapes.

Sorting by length into a small fixed set of buckets bounds the number of compiled shapes and keeps
padding low; every batch has the same row count (a multiple of the device count).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


@dataclasses.dataclass
class Tokenized:
    ids: list[np.ndarray]  # one int32 array per text, no padding
    truncated: int  # texts cut to max_length

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)


def tokenize(tokenizer, texts: Sequence[str], max_length: int, truncate: bool = True,
             batch: int = 1024) -> Tokenized:
    """Fast, batched tokenization with the model's special tokens; over-long texts are cut
    (counted) or refused."""
    ids: list[np.ndarray] = []
    truncated = 0
    for start in range(0, len(texts), batch):
        enc = tokenizer(list(texts[start:start + batch]), add_special_tokens=True)["input_ids"]
        for j, row in enumerate(enc):
            if len(row) == 0:
                raise ValueError(f"text {start + j} tokenizes to nothing: {texts[start + j]!r}")
            if len(row) > max_length:
                if not truncate:
                    raise ValueError(
                        f"text {start + j} has {len(row)} tokens, more than the model's context of {max_length} "
                        "(drop --no-truncate to cut it, or shorten the text)"
                    )
                row = row[:max_length]
                truncated += 1
            ids.append(np.asarray(row, dtype=np.int32))
    return Tokenized(ids, truncated)


def bucket_length(n: int, max_length: int) -> int:
    """The padded length for a text of n tokens: the smallest bucket that fits, capped at the context."""
    return min(next((b for b in BUCKETS if b >= n), max_length), max_length)


@dataclasses.dataclass
class Batch:
    rows: np.ndarray  # [B] indices into the text list; -1 for filler rows
    input_ids: np.ndarray  # [B, S] int32, right-padded
    attention_mask: np.ndarray  # [B, S] int32
    real_tokens: int

    @property
    def computed_tokens(self) -> int:
        return int(self.input_ids.size)


def make_batches(tok: Tokenized, indices: Sequence[int], batch_size: int, max_length: int,
                 pad_id: int, row_multiple: int = 1) -> Iterator[Batch]:
    """Batches over `indices`, grouped by length bucket, shortest first.

    A bucket's leftover rows (fewer than a batch) ride along with the next longer bucket instead of
    being padded with filler rows; only the very last batch is short, and its row count is rounded
    up to a power of two (times `row_multiple`) so the number of compiled shapes stays small.
    """
    indices = np.asarray(indices, dtype=np.int64)
    order = indices[np.argsort(tok.lengths[indices], kind="stable")]
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(bucket_length(len(tok.ids[i]), max_length), []).append(int(i))
    carry: list[int] = []
    for seq in sorted(buckets):
        members = carry + buckets[seq]
        full = len(members) - len(members) % batch_size
        for start in range(0, full, batch_size):
            yield _pack(tok, members[start:start + batch_size], batch_size, seq, pad_id)
        carry = members[full:]
        last_seq = seq
    if carry:
        rows = row_multiple
        while rows < len(carry):
            rows *= 2
        yield _pack(tok, carry, min(rows, batch_size), last_seq, pad_id)


def _pack(tok: Tokenized, rows: list[int], n_rows: int, seq: int, pad_id: int) -> Batch:
    ids = np.full((n_rows, seq), pad_id, np.int32)
    mask = np.zeros((n_rows, seq), np.int32)
    for r, i in enumerate(rows):
        n = len(tok.ids[i])
        ids[r, :n] = tok.ids[i]
        mask[r, :n] = 1
    mask[len(rows):, 0] = 1  # filler rows: one token so pooling stays finite; discarded
    filled = np.full(n_rows, -1, np.int64)
    filled[: len(rows)] = rows
    return Batch(filled, ids, mask, int(sum(len(tok.ids[i]) for i in rows)))
