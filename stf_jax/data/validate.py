"""Dataset checks: schema, duplicates, near-duplicates, per-trait counts and lengths.

Errors make a dataset unusable for extraction or make its splits leak (a text in
two pairs); warnings flag pairs a person should look at (unknown trait slugs,
sides whose lengths differ by more than ``max_length_ratio``, which lets length
rather than the trait dominate the difference vector).

Near-duplicates are compared across every text of the dataset, both sides and all
traits, except a pair's own two sides: for traits such as formality those are
meant to be close paraphrases.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stf_jax.data.near_duplicates import SHINGLE_SIZE, find_near_duplicates
from stf_jax.data.schema import SPLITS, TRAITS, ContrastPair, normalize_text, word_count
from stf_jax.data.stats import TraitStats, format_stats, pair_stats

DEFAULT_THRESHOLD = 0.6
DEFAULT_MIN_PER_TRAIT = 100
DEFAULT_MAX_LENGTH_RATIO = 2.0
LENGTH_RATIO_EXEMPT: tuple[str, ...] = ("verbosity",)
SIDES: tuple[str, ...] = ("positive", "negative")


@dataclass(frozen=True)
class NearDuplicate:
    """Two texts of different pairs whose character n-gram Jaccard reaches the threshold.

    ``first`` and ``second`` read "pair_id:side".
    """

    first: str
    second: str
    jaccard: float


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of ``validate_pairs``; ``ok`` when there are no errors."""

    n_pairs: int
    threshold: float
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    near_duplicates: tuple[NearDuplicate, ...]
    stats: dict[str, TraitStats]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, max_items: int = 25) -> str:
        """Readable text: verdict, per-trait table, then errors and warnings (first ``max_items`` each)."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"{verdict}: {self.n_pairs} pairs, {len(self.stats)} traits, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings "
            f"(near-duplicate threshold: {SHINGLE_SIZE}-gram Jaccard >= {self.threshold})",
            "",
            format_stats(self.stats),
        ]
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines += ["", f"{title} ({len(items)}):"]
                lines += [f"  {item}" for item in items[:max_items]]
                if len(items) > max_items:
                    lines.append(f"  ... and {len(items) - max_items} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def validate_pairs(
    pairs: Sequence[ContrastPair],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_per_trait: int = DEFAULT_MIN_PER_TRAIT,
    expected_traits: Collection[str] | None = None,
    max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
) -> ValidationReport:
    """Check a dataset and report every problem found (it never raises on bad data).

    ``expected_traits``: traits that must all be present (``TRAITS`` for the shipped set).
    """
    errors = _schema_errors(pairs) + _duplicate_errors(pairs)
    near = _near_duplicates(pairs, threshold)
    errors += [f"near-duplicate texts (Jaccard {n.jaccard:.2f}): {n.first} ~ {n.second}" for n in near]
    errors += _count_errors(pairs, min_per_trait, expected_traits)
    warnings = _unknown_trait_warnings(pairs) + _length_warnings(pairs, max_length_ratio)
    return ValidationReport(
        n_pairs=len(pairs),
        threshold=threshold,
        errors=tuple(errors),
        warnings=tuple(warnings),
        near_duplicates=tuple(near),
        stats=pair_stats(pairs),
    )


def _schema_errors(pairs: Sequence[ContrastPair]) -> list[str]:
    errors = []
    for pair in pairs:
        label = pair.id or "<empty id>"
        for field in ("id", "trait", *SIDES):
            if not getattr(pair, field).strip():
                errors.append(f"{label}: empty {field}")
        if pair.split is not None and pair.split not in SPLITS:
            errors.append(f"{label}: split must be one of {SPLITS}, got {pair.split!r}")
        if pair.positive.strip() and normalize_text(pair.positive) == normalize_text(pair.negative):
            errors.append(f"{label}: positive and negative are identical")
    return errors


def _duplicate_errors(pairs: Sequence[ContrastPair]) -> list[str]:
    """Repeated ids, and any text used by two different pairs (on either side)."""
    errors = [
        f"duplicate id {pair_id!r} ({count} pairs)"
        for pair_id, count in Counter(p.id for p in pairs).items()
        if count > 1
    ]
    users: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        for side in SIDES:
            text = normalize_text(getattr(pair, side))
            if text:
                users[text].append(f"{pair.id}:{side}")
    for places in users.values():
        owners = {place.rsplit(":", 1)[0] for place in places}
        if len(owners) > 1:
            errors.append(f"duplicate text in {', '.join(places)}")
    return errors


def _near_duplicates(pairs: Sequence[ContrastPair], threshold: float) -> list[NearDuplicate]:
    texts, owners, labels = [], [], []
    for index, pair in enumerate(pairs):
        for side in SIDES:
            texts.append(normalize_text(getattr(pair, side)))
            owners.append(index)
            labels.append(f"{pair.id}:{side}")
    return [
        NearDuplicate(labels[i], labels[j], score) for i, j, score in find_near_duplicates(texts, owners, threshold)
    ]


def _count_errors(
    pairs: Sequence[ContrastPair], min_per_trait: int, expected_traits: Collection[str] | None
) -> list[str]:
    counts = Counter(pair.trait for pair in pairs)
    errors = [
        f"trait {trait!r} has {count} pairs, fewer than {min_per_trait}"
        for trait, count in sorted(counts.items())
        if count < min_per_trait
    ]
    if expected_traits is not None:
        missing = sorted(set(expected_traits) - set(counts))
        if missing:
            errors.append(f"missing trait(s): {', '.join(missing)}")
    return errors


def _unknown_trait_warnings(pairs: Sequence[ContrastPair]) -> list[str]:
    unknown = sorted({pair.trait for pair in pairs} - set(TRAITS) - {""})
    return [f"trait {trait!r} is not one of the 26 paper traits" for trait in unknown]


def _length_warnings(pairs: Sequence[ContrastPair], max_ratio: float) -> list[str]:
    warnings = []
    for pair in pairs:
        if pair.trait in LENGTH_RATIO_EXEMPT:
            continue
        lengths = sorted((word_count(pair.positive), word_count(pair.negative)))
        if lengths[0] and lengths[1] > max_ratio * lengths[0]:
            warnings.append(
                f"{pair.id}: sides differ in length by more than {max_ratio:g}x "
                f"({word_count(pair.positive)} vs {word_count(pair.negative)} words)"
            )
    return warnings
