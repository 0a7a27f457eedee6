"""Deterministic text cleaning, sampling and pairing shared by the recipes.

Nothing here depends on file order or on Python's salted ``hash``: samples are
"the k texts with the smallest sha256 key", keys salted with the trait so two
recipes over one dataset draw different texts. Public datasets rarely pair their
texts, so unpaired pools are matched by length rank: both samples are sorted by
word count and zipped, pairing texts of similar length.
"""

from __future__ import annotations

import hashlib
import heapq
import html
import re
from collections.abc import Iterable

from stf_jax.data.schema import ContrastPair, normalize_text, word_count

# Texts outside this word range are skipped: fragments below, and above the
# paper's 512-token cap (about 380 words).
MIN_WORDS = 5
MAX_WORDS = 350
# Non-verbosity pairs whose sides differ more than this in word count are dropped,
# so that length does not dominate the pair's difference vector.
MAX_LENGTH_RATIO = 2.0

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?%)])")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text: str) -> str:
    """HTML line breaks and entities resolved, tokenizer spacing (" ." -> ".") undone, spaces collapsed."""
    text = html.unescape(_HTML_BREAK.sub(" ", text))
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def usable(text: str) -> bool:
    """Whether a cleaned text has a length recipes keep (MIN_WORDS..MAX_WORDS words)."""
    return MIN_WORDS <= word_count(text) <= MAX_WORDS


def sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by a capital, digit or opening quote."""
    return [part for part in _SENTENCE_END.split(text) if part]


def leading_words(parts: Iterable[str], min_words: int, max_words: int = MAX_WORDS) -> str:
    """Whole sentences from the start until at least ``min_words`` words ("" past ``max_words``)."""
    taken: list[str] = []
    count = 0
    for part in parts:
        taken.append(part)
        count += word_count(part)
        if count >= min_words:
            break
    return " ".join(taken) if min_words <= count <= max_words else ""


def within_ratio(first: str, second: str, ratio: float = MAX_LENGTH_RATIO) -> bool:
    """Whether the word counts of two texts differ by at most ``ratio``."""
    short, long = sorted((word_count(first), word_count(second)))
    return long <= ratio * short


def stable_key(salt: str, *texts: str) -> int:
    """A 64-bit sort key from sha256 of the salt and the normalized texts."""
    payload = "\x00".join([salt, *(normalize_text(text) for text in texts)])
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:8], "big")


class SmallestK:
    """The (at most) k distinct items with the smallest keys among those offered.

    A deterministic sample of a stream in O(k) memory: what ends up inside does not
    depend on the order items arrive in.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[int, tuple[str, ...]]] = []  # (-key, item): a max-heap on key
        self._keys: set[int] = set()

    def offer(self, key: int, item: tuple[str, ...]) -> None:
        if self.k <= 0 or key in self._keys:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-key, item))
            self._keys.add(key)
        elif key < -self._heap[0][0]:
            dropped_key, _ = heapq.heapreplace(self._heap, (-key, item))
            self._keys.discard(-dropped_key)
            self._keys.add(key)

    def items(self) -> list[tuple[str, ...]]:
        """Kept items in increasing key order."""
        return [item for _, item in sorted(self._heap, key=lambda entry: -entry[0])]


def make_pair(dataset: str, trait: str, positive: str, negative: str) -> ContrastPair:
    """A recipe pair with an id derived from its content, so rebuilding gives the same ids."""
    digest = hashlib.sha256("\x00".join([trait, positive, negative]).encode("utf-8")).hexdigest()
    return ContrastPair(
        id=f"{dataset}-{trait}-{digest[:12]}",
        trait=trait,
        positive=positive,
        negative=negative,
        source=f"recipe:{dataset}",
    )


def sample_pairs(dataset: str, trait: str, candidates: Iterable[tuple[str, str]], max_pairs: int) -> list[ContrastPair]:
    """The ``max_pairs`` (positive, negative) candidates with the smallest keys, sorted by id."""
    kept = SmallestK(max_pairs)
    for positive, negative in candidates:
        kept.offer(stable_key(trait, positive, negative), (positive, negative))
    return sorted((make_pair(dataset, trait, pos, neg) for pos, neg in kept.items()), key=lambda p: p.id)


def pair_by_length(
    dataset: str,
    trait: str,
    labelled: Iterable[tuple[str, bool]],
    max_pairs: int,
) -> list[ContrastPair]:
    """Pair an unpaired stream of (text, is_positive) by length rank.

    Keeps the ``max_pairs`` positives and negatives with the smallest keys
    (texts of usable length only, each text once), sorts each sample by word
    count and zips them; pairs whose lengths still differ more than
    ``MAX_LENGTH_RATIO`` are dropped.
    """
    pools = {True: SmallestK(max_pairs), False: SmallestK(max_pairs)}
    for text, is_positive in labelled:
        if usable(text):
            pools[is_positive].offer(stable_key(trait, text), (text,))
    by_length = {
        side: sorted((item[0] for item in pool.items()), key=lambda text: (word_count(text), stable_key(trait, text)))
        for side, pool in pools.items()
    }
    # zip stops at the smaller sample; the larger one's extra texts go unused.
    pairs = [
        make_pair(dataset, trait, positive, negative)
        for positive, negative in zip(by_length[True], by_length[False], strict=False)
        if within_ratio(positive, negative)
    ]
    return sorted(pairs, key=lambda pair: pair.id)
