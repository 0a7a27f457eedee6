"""The contrast-pair record and the text conventions every data module shares.

A contrast pair holds two texts that carry the same content and differ along one
trait: ``positive`` is the high end of the trait, ``negative`` the low end.
Words are whitespace-separated tokens; "normalized" text is lowercased with runs
of whitespace collapsed, the form used for duplicate checks and text-disjoint
splits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

TRAITS: tuple[str, ...] = (
    "accessibility",
    "assertiveness",
    "authority",
    "certainty",
    "clarity",
    "concreteness",
    "creativity",
    "directness",
    "emotional_tone",
    "empathy",
    "enthusiasm",
    "formality",
    "hedging",
    "humor",
    "inclusivity",
    "objectivity",
    "optimism",
    "persuasiveness",
    "politeness",
    "precision",
    "professionalism",
    "register",
    "specificity",
    "technical_complexity",
    "urgency",
    "verbosity",
)

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True, slots=True)
class ContrastPair:
    """One minimal pair: same content, ``positive`` high and ``negative`` low on ``trait``.

    Attributes:
      id: stable identifier, unique within a dataset.
      trait: trait slug (one of ``TRAITS`` for the shipped set).
      positive: text at the high end of the trait.
      negative: text at the low end of the trait.
      prompt: neutral request or context both texts plausibly answer ("" if none).
      source: how the pair was made, e.g. "handwritten" or "recipe:imdb".
      split: "train" or "test" to pin the pair to a split; None lets
        ``split_pairs`` decide.
    """

    id: str
    trait: str
    positive: str
    negative: str
    prompt: str = ""
    source: str = ""
    split: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The JSONL record; ``split`` is written only when pinned."""
        record = {
            "id": self.id,
            "trait": self.trait,
            "prompt": self.prompt,
            "positive": self.positive,
            "negative": self.negative,
            "source": self.source,
        }
        if self.split is not None:
            record["split"] = self.split
        return record


def normalize_text(text: str) -> str:
    """Lowercase and collapse whitespace, so trivially re-spaced copies compare equal."""
    return " ".join(text.lower().split())


def word_count(text: str) -> int:
    """Whitespace-token count: the length unit of the length rules and statistics."""
    return len(text.split())


def dataset_hash(pairs: Iterable[ContrastPair]) -> str:
    """sha256 over (id, trait, prompt, positive, negative) of every pair, in (trait, id) order.

    Extraction manifests store it so a vector can be traced to the exact texts it
    was computed from. Sorting first (the order ``load_pairs`` returns) makes it
    independent of file layout; ``source`` and ``split`` are bookkeeping and left out.
    """
    digest = hashlib.sha256()
    for pair in sorted(pairs, key=lambda pair: (pair.trait, pair.id)):
        fields = [pair.id, pair.trait, pair.prompt, pair.positive, pair.negative]
        digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
