"""Near-duplicate search by character n-gram Jaccard similarity, in about a second.

Comparing every text with every other is quadratic (~50M comparisons for 10,000
texts), and exact prefix filtering does not help much on natural English: a
text's rarest 40% of 5-grams still include common ones. So candidates come from
MinHash locality-sensitive hashing and every candidate is then scored exactly:

- each text becomes the set of 64-bit hashes of its character n-grams (a stable
  polynomial hash of the code points, so results never depend on Python's salted
  ``hash`` or on input order; collisions among a few million n-grams have odds
  around 1e-7 and are ignored);
- ``NUM_BANDS`` bands of ``ROWS_PER_BAND`` min-hashes each: two texts become
  candidates when all the rows of some band agree. A pair with Jaccard J is
  missed with probability (1 - J**3)**40: 6e-5 at J = 0.6, 2e-7 at J = 0.7;
- candidates whose min-hash agreement is far below the threshold are dropped,
  and the rest are kept only when their exact Jaccard reaches the threshold, so
  no pair below it is ever reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHINGLE_SIZE = 5
ROWS_PER_BAND = 3
NUM_BANDS = 40
_POLY_BASE = np.uint64(0x100000001B3)
_SEED = 20240611
# Texts hashed per block in the min-hash step, bounding the [hashes, n-grams]
# intermediate to about 120 * 40,000 * 4 bytes = 19 MB.
_BLOCK_GRAMS = 40_000
# Candidates whose min-hash agreement (an unbiased Jaccard estimate, standard
# deviation <= 0.046 with 120 hashes) falls this far below the threshold skip the
# exact check; a pair at J = 0.6 is dropped this way with probability ~4e-6.
_ESTIMATE_MARGIN = 0.2


class ShingleSets:
    """The n-gram hash sets of many texts, stored flat: text k is values[starts[k]:starts[k + 1]]."""

    def __init__(self, values: np.ndarray, starts: np.ndarray) -> None:
        self.values = values
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.starts[index] : self.starts[index + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)


def shingle_sets(texts: Sequence[str], size: int = SHINGLE_SIZE) -> ShingleSets:
    """Sorted unique 64-bit n-gram hashes of every text (a text shorter than n is one n-gram).

    All texts are hashed in one vectorized pass over their concatenated code points;
    only the per-text deduplication loops in Python.
    """
    lengths = np.array([len(text) for text in texts], dtype=np.int64)
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    text_starts = np.concatenate([[0], np.cumsum(lengths)])
    # A window of `width` code points starts at every position that leaves room for it.
    widths = np.minimum(lengths, size)
    n_windows = np.where(lengths > 0, lengths - widths + 1, 0)
    owner = np.repeat(np.arange(len(texts)), n_windows)
    window_starts = np.repeat(text_starts[:-1] - np.concatenate([[0], np.cumsum(n_windows)[:-1]]), n_windows)
    window_starts += np.arange(len(owner))
    window_widths = widths[owner]
    values = np.zeros(len(owner), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(size):
            inside = offset < window_widths
            values[inside] = values[inside] * _POLY_BASE + codes[window_starts[inside] + offset]
        values = _mix(values + window_widths.astype(np.uint64))
    bounds = np.concatenate([[0], np.cumsum(n_windows)])
    unique = [np.unique(values[lo:hi]) for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
    starts = np.concatenate([[0], np.cumsum([len(u) for u in unique])])
    return ShingleSets(np.concatenate(unique), starts)


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A & B| / |A | B| for two sorted unique hash arrays."""
    shared = len(np.intersect1d(first, second, assume_unique=True))
    return shared / (len(first) + len(second) - shared)


def find_near_duplicates(
    texts: Sequence[str],
    owners: Sequence[int],
    threshold: float,
    size: int = SHINGLE_SIZE,
) -> list[tuple[int, int, float]]:
    """All (i, j, jaccard) with i < j, jaccard >= threshold and different owners, sorted.

    ``texts`` should already be normalized. Texts with the same owner (the two
    sides of one pair) are never reported, and exact copies are skipped: those
    are duplicates, reported separately.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not texts:
        return []
    grams = shingle_sets(texts, size)
    signatures = _minhash_signatures(grams)
    first, second = _band_candidates(signatures)
    sizes = grams.sizes()
    owner_ids = np.asarray(owners)
    estimate = (signatures[first] == signatures[second]).mean(axis=1)
    keep = (
        (owner_ids[first] != owner_ids[second])
        # Jaccard <= |smaller| / |larger|.
        & (np.minimum(sizes[first], sizes[second]) >= threshold * np.maximum(sizes[first], sizes[second]))
        & (estimate >= threshold - _ESTIMATE_MARGIN)
    )
    found = []
    for i, j in zip(first[keep].tolist(), second[keep].tolist(), strict=True):
        if texts[i] == texts[j]:
            continue
        score = jaccard(grams[i], grams[j])
        if score >= threshold:
            found.append((i, j, score))
    return found


def _mix(value: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the whole 64-bit word."""
    with np.errstate(over="ignore"):
        value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return value ^ (value >> np.uint64(31))


def _minhash_signatures(grams: ShingleSets) -> np.ndarray:
    """[texts, bands * rows] minima of seeded random permutations x -> a*x + b (mod 2**32).

    The n-gram hashes are already uniformly mixed, so 32-bit affine permutations
    of their high halves behave as independent min-wise hashes; 32-bit lanes run
    four times faster than 64-bit ones. Empty texts keep the all-ones signature.
    """
    num_hashes = NUM_BANDS * ROWS_PER_BAND
    rng = np.random.default_rng(_SEED)
    multipliers = (rng.integers(0, 2**31, size=num_hashes, dtype=np.uint32) << np.uint32(1)) | np.uint32(1)
    offsets = rng.integers(0, 2**32, size=num_hashes, dtype=np.uint32)
    values = (grams.values >> np.uint64(32)).astype(np.uint32)
    sizes = grams.sizes()
    signatures = np.full((len(grams), num_hashes), np.iinfo(np.uint32).max, dtype=np.uint32)
    nonempty = np.flatnonzero(sizes)
    block_of = np.cumsum(sizes[nonempty]) // _BLOCK_GRAMS
    with np.errstate(over="ignore"):
        for block_id in np.unique(block_of):
            block = nonempty[block_of == block_id]
            lo, hi = grams.starts[block[0]], grams.starts[block[-1] + 1]
            hashed = values[None, lo:hi] * multipliers[:, None] + offsets[:, None]
            signatures[block] = np.minimum.reduceat(hashed, grams.starts[block] - lo, axis=1).T
    return signatures


def _band_candidates(signatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique index pairs (i < j) whose signatures agree on every row of some band."""
    n_texts = len(signatures)
    codes = []
    for band in range(NUM_BANDS):
        rows = signatures[:, band * ROWS_PER_BAND : (band + 1) * ROWS_PER_BAND].astype(np.uint64)
        # One 64-bit key per band; a key collision only adds a candidate, never loses one.
        key = np.zeros(len(rows), dtype=np.uint64)
        for column in range(ROWS_PER_BAND):
            key = _mix(key ^ rows[:, column])
        order = np.argsort(key, kind="stable")
        grouped = key[order]
        # Members of a group sit next to each other in `order`; pair each with the
        # ones 1, 2, ... places later while they still share the group.
        for distance in range(1, n_texts):
            same = grouped[distance:] == grouped[:-distance]
            if not same.any():
                break
            low = order[:-distance][same]
            high = order[distance:][same]
            codes.append(np.minimum(low, high) * n_texts + np.maximum(low, high))
    if not codes:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    return unique // n_texts, unique % n_texts
