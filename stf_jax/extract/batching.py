"""Tokenize once, then lay texts out in a few fixed shapes: packed rows, or length buckets.

Packing (`make_packed_batches`): short texts share rows of one fixed length, each attending only to itself
(the decoder's segment ids), so almost no token is padding and one shape serves every run of a model:
compiled once per machine (the persistent cache), not per dataset. Texts longer than a row go to length
buckets (`make_batches`): sorted by length into a fixed ladder of padded lengths, which bounds the number of
compiled shapes and keeps padding low. Row counts are multiples of the device count.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import UserError

BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


class TokenizeError(UserError, ValueError):
    """A text that cannot be fed to the model as asked (empty after tokenization, too long)."""


@dataclasses.dataclass
class Tokenized:
    ids: list[np.ndarray]  # one int32 array per text, no padding
    truncated: int  # texts cut to max_length
    truncated_texts: list[int] = dataclasses.field(default_factory=list)  # their indices
    original_lengths: dict[int, int] = dataclasses.field(default_factory=dict)  # index -> tokens before the cut

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)


def tokenize(tokenizer, texts: Sequence[str], max_length: int, truncate: bool = True,
             batch: int = 1024, describe: Callable[[int], str] | None = None,
             add_special_tokens: bool = True) -> Tokenized:
    """Fast, batched tokenization, with the model's special tokens unless the texts are chat-templated (the
    template writes them); over-long texts are cut (counted, with their indices) or refused. `describe(i)`
    names text i in messages (e.g. its pair id)."""
    describe = describe or (lambda i: f"text {i}")
    ids: list[np.ndarray] = []
    truncated = 0
    cut: list[int] = []
    lengths: dict[int, int] = {}
    for start in range(0, len(texts), batch):
        enc = tokenizer(list(texts[start:start + batch]), add_special_tokens=add_special_tokens)["input_ids"]
        for j, row in enumerate(enc):
            if len(row) == 0:
                raise TokenizeError(f"{describe(start + j)} tokenizes to nothing: {texts[start + j][:80]!r}; "
                                    "give it some text")
            if len(row) > max_length:
                if not truncate:
                    raise TokenizeError(
                        f"{describe(start + j)} has {len(row)} tokens, more than the model's context of {max_length} tokens "
                        "allowed here (cut it with truncate=, raise max_length=, or shorten the text)"
                    )
                lengths[start + j] = len(row)
                row = row[:max_length]
                truncated += 1
                cut.append(start + j)
            ids.append(np.asarray(row, dtype=np.int32))
    return Tokenized(ids, truncated, cut, lengths)


def bucket_length(n: int, max_length: int) -> int:
    """The padded length for a text of n tokens: the smallest bucket that fits, capped at the context."""
    return min(next((b for b in BUCKETS if b >= n), max_length), max_length)


@dataclasses.dataclass
class Batch:
    rows: np.ndarray  # [B] indices into the text list, -1 for filler rows; packed: [B, slots], -1 empty slots
    input_ids: np.ndarray  # [B, S] int32, right-padded
    attention_mask: np.ndarray  # [B, S] int32 segments: 0 padding, k >= 1 the row's k-th text (slot k - 1)
    real_tokens: int

    @property
    def computed_tokens(self) -> int:
        return int(self.input_ids.size)


def rows_for_length(seq: int, batch_size: int, row_multiple: int = 1, max_batch_tokens: int | None = None,
                    attention_budget: float | None = None, n_heads: int = 1) -> int:
    """Rows of a batch padded to `seq` tokens: at most batch_size, at most max_batch_tokens // seq, and at most
    what keeps the attention scores (n_heads x seq² f32 per row, counted twice for softmax) under
    attention_budget bytes; a multiple of row_multiple, at least row_multiple (one row per device)."""
    rows = batch_size
    if max_batch_tokens:
        rows = min(rows, max_batch_tokens // seq)
    if attention_budget:
        rows = min(rows, int(attention_budget // (n_heads * seq * seq * 4 * 2)))
    return max(row_multiple, rows - rows % row_multiple)


def make_batches(tok: Tokenized, indices: Sequence[int], batch_size: int, max_length: int,
                 pad_id: int, row_multiple: int = 1, rows_for: Callable[[int], int] | None = None) -> Iterator[Batch]:
    """Batches over `indices`, grouped by length bucket, shortest first.

    A bucket's leftover rows (fewer than a batch) ride along with the next longer bucket instead of
    being padded with filler rows; only the very last batch is short, and its row count is rounded
    up to a power of two (times `row_multiple`) so the number of compiled shapes stays small.
    `rows_for(seq)` caps the rows of a batch padded to seq tokens (a token / memory budget, see
    `rows_for_length`), so long texts go in small batches; default: batch_size for every length.
    """
    rows_for = rows_for or (lambda seq: batch_size)
    indices = np.asarray(indices, dtype=np.int64)
    order = indices[np.argsort(tok.lengths[indices], kind="stable")]
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(bucket_length(len(tok.ids[i]), max_length), []).append(int(i))
    carry: list[int] = []
    for seq in sorted(buckets):
        size = rows_for(seq)
        members = carry + buckets[seq]
        full = len(members) - len(members) % size
        for start in range(0, full, size):
            yield _pack(tok, members[start:start + size], size, seq, pad_id)
        carry = members[full:]
        last_seq, last_size = seq, size
    if carry:
        yield _pack(tok, carry, _short_batch_rows(len(carry), row_multiple, last_size), last_seq, pad_id)


def _short_batch_rows(n: int, row_multiple: int, cap: int) -> int:
    """Rows of a last, short batch of n texts or rows: row_multiple times a power of two, at most cap, so the
    number of compiled shapes stays small."""
    rows = row_multiple
    while rows < n:
        rows *= 2
    return min(rows, cap)


PACK_SLOTS = 16  # texts per packed row at most: one pooled shape, [B, PACK_SLOTS, D]


def pack_rows(lengths: Sequence[int], row_len: int, slots: int = PACK_SLOTS) -> list[list[int]]:
    """Best-fit decreasing: texts (their lengths, each <= row_len) into as few rows of row_len tokens and at
    most `slots` texts as it finds -> the rows, each a list of positions into `lengths`. Deterministic."""
    open_rows: dict[int, list[int]] = {}  # free tokens -> rows with that much room (and a free slot)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        room = next((f for f in range(n, row_len + 1) if open_rows.get(f)), None)
        if room is None:
            rows.append([])
            free.append(row_len)
            r = len(rows) - 1
        else:
            r = open_rows[room].pop()
        rows[r].append(i)
        free[r] -= n
        if len(rows[r]) < slots and free[r] > 0:
            open_rows.setdefault(free[r], []).append(r)
    return rows


def make_packed_batches(tok: Tokenized, indices: Sequence[int], batch_size: int, max_length: int, pad_id: int,
                        row_len: int, row_multiple: int = 1, rows_for: Callable[[int], int] | None = None,
                        slots: int = PACK_SLOTS) -> Iterator[Batch]:
    """Batches over `indices`: texts of at most row_len tokens packed `pack_rows`-wise into rows of row_len
    (rows_for(row_len) rows a batch; the last batch's rows rounded up to a power of two times row_multiple),
    then the longer texts in length buckets (`make_batches`). Each packed text's state is computed as in a
    padded row of its own: the decoder keeps texts apart by their segment ids."""
    rows_for = rows_for or (lambda seq: batch_size)
    indices = np.asarray(indices, dtype=np.int64)
    lengths = tok.lengths[indices] if len(indices) else np.zeros(0, np.int64)
    short = indices[lengths <= row_len]
    layout = [[int(short[j]) for j in row] for row in pack_rows(tok.lengths[short].tolist(), row_len, slots)]
    size = rows_for(row_len)
    for start in range(0, len(layout), size):
        members = layout[start:start + size]
        n_rows = size if len(members) == size else _short_batch_rows(len(members), row_multiple, size)
        yield _pack_rows(tok, members, n_rows, row_len, slots, pad_id)
    yield from make_batches(tok, indices[lengths > row_len], batch_size, max_length, pad_id, row_multiple, rows_for)


def _pack_rows(tok: Tokenized, layout: list[list[int]], n_rows: int, row_len: int, slots: int,
               pad_id: int) -> Batch:
    ids = np.full((n_rows, row_len), pad_id, np.int32)
    segments = np.zeros((n_rows, row_len), np.int32)
    texts = np.full((n_rows, slots), -1, np.int64)
    real = 0
    for r, members in enumerate(layout):
        at = 0
        for k, i in enumerate(members):
            n = len(tok.ids[i])
            ids[r, at:at + n] = tok.ids[i]
            segments[r, at:at + n] = k + 1
            texts[r, k] = i
            at += n
        real += at
    segments[len(layout):, 0] = 1  # filler rows: one token so pooling stays finite; discarded
    return Batch(texts, ids, segments, real)


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
