"""Token activations of one layer over a text corpus, streamed through a bounded shuffle buffer.

An SAE trains on single tokens' residual states in random order. The corpus is read in length-bucketed
batches (the extraction batcher), each text's first token is dropped (an attention sink whose norm is many
times the others'; sae-lens users exclude it the same way), and the tokens go through a buffer of fixed
capacity that is shuffled and half-emptied whenever it fills, so memory is capacity × d_in floats however
long the corpus is. Texts are split once into train and held-out (every `holdout_every`-th text) so the
quality figures are measured on text the SAE never saw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import jax
import numpy as np

from ..errors import UserError


class CorpusError(UserError, ValueError):
    """A corpus with no usable text."""


def corpus_texts(source: str | Path = "shipped") -> list[str]:
    """The texts to train on: "shipped" (both sides of the shipped contrast pairs and the shipped general
    corpus, deduplicated), or a .txt (one text per line) / .jsonl (a "text" field per line) file."""
    if str(source) == "shipped":
        from ..data import load_pairs
        from ..data.corpus import load_corpus

        texts = [t for p in load_pairs("shipped") for t in (p.positive, p.negative)] + [t.text for t in load_corpus()]
    else:
        from ..extract.inputs import read_corpus

        texts, _ = read_corpus(source)
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    if not texts:
        raise CorpusError(f"{source}: no usable text (every line is empty); give a .txt with one text per line or "
                          "a .jsonl with a 'text' field")
    return texts


def split_texts(texts: Sequence[str], holdout_every: int = 10) -> tuple[list[str], list[str]]:
    """(train, held-out): every holdout_every-th text is held out (at least one of each when possible)."""
    held = [t for i, t in enumerate(texts) if i % holdout_every == holdout_every - 1]
    train = [t for i, t in enumerate(texts) if i % holdout_every != holdout_every - 1]
    if not held and len(train) > 1:
        held = [train.pop()]
    if not train:
        raise CorpusError(f"the corpus has {len(texts)} text(s): too few to hold any out for evaluation")
    return train, held


class TokenBatches:
    """Padded token batches of texts for one model: (ids [B, S], mask [B, S], keep [B, S]) where keep marks
    the real tokens after each text's first."""

    def __init__(self, model, texts: Sequence[str], batch_size: int = 16, max_length: int = 256):
        from ..extract.batching import make_batches, tokenize

        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.tokens = tokenize(model.tokenizer, list(texts), max_length, truncate=True)
        self.n_tokens = int(sum(max(len(r) - 1, 0) for r in self.tokens.ids))
        if self.n_tokens == 0:
            raise CorpusError("the corpus tokenizes to texts of one token each: nothing to train on")
        self._make = lambda order: make_batches(self.tokens, order, batch_size, max_length,
                                                model.tokenizer.pad_token_id or 0)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for b in self._make(np.arange(len(self.tokens.ids))):
            keep = b.attention_mask.copy()
            keep[:, 0] = 0
            keep[b.rows < 0] = 0
            yield b.input_ids, b.attention_mask, keep.astype(bool)


class LayerActivations:
    """Token states [n, d_in] (f32, host) entering block `layer`, batch after batch over the texts."""

    def __init__(self, model, layer: int, texts: Sequence[str], batch_size: int = 16, max_length: int = 256):
        from ..extract.forward import make_mesh, PooledForward

        self.batches = TokenBatches(model, texts, batch_size, max_length)
        self.forward = PooledForward(model, (layer,), "tokens", make_mesh())
        self.n_tokens = self.batches.n_tokens

    def __iter__(self) -> Iterator[np.ndarray]:
        for ids, mask, keep in self.batches:
            h = np.asarray(jax.device_get(self.forward(ids, mask)))[0]  # [B, S, D]
            yield h[keep]


class ActivationCache:
    """The training tokens' states on disk ([n_tokens, d_in] f32 .npy): the first pass writes them as the model
    produces them (to a hidden temporary file, renamed when complete), later passes read them back in chunks
    in a random order. Memory stays one chunk; an interrupted first pass leaves nothing behind to trust."""

    CHUNK = 8192

    def __init__(self, path: Path, n_tokens: int, d_in: int):
        self.path, self.shape = Path(path), (n_tokens, d_in)

    @property
    def complete(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            return np.load(self.path, mmap_mode="r").shape == self.shape
        except (ValueError, OSError):
            return False

    def chunks(self, source: Iterable[np.ndarray], seed: int) -> Iterator[np.ndarray]:
        if self.complete:
            data = np.load(self.path, mmap_mode="r")
            starts = np.arange(0, self.shape[0], self.CHUNK)
            for s in np.random.default_rng(seed).permutation(starts):
                yield np.asarray(data[s:s + self.CHUNK], np.float32)
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=self.shape)
        n = 0
        try:
            for chunk in source:
                out[n:n + len(chunk)] = chunk
                n += len(chunk)
                yield chunk
            if n != self.shape[0]:
                raise RuntimeError(f"activation cache: {n} tokens written, {self.shape[0]} expected")
            out.flush()
            del out
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def shuffled_batches(chunks: Iterator[np.ndarray], batch: int, capacity: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of `chunks` regrouped into batches of `batch` rows in random order through a buffer of at most
    `capacity` rows (+ one chunk): when full, shuffle and emit half. The tail that fills no batch is dropped."""
    rng = np.random.default_rng(seed)
    capacity = max(capacity, 2 * batch)
    buf: list[np.ndarray] = []
    n = 0
    for chunk in chunks:
        buf.append(chunk)
        n += len(chunk)
        if n >= capacity:
            rows = np.concatenate(buf)
            rng.shuffle(rows)
            out = (len(rows) // 2) // batch * batch
            for i in range(0, out, batch):
                yield rows[i:i + batch]
            buf, n = [rows[out:]], len(rows) - out
    if n >= batch:
        rows = np.concatenate(buf)
        rng.shuffle(rows)
        for i in range(0, len(rows) - batch + 1, batch):
            yield rows[i:i + batch]
