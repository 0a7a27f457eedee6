"""Per-trait counts and word-length statistics, and their text table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from stf_jax.data.schema import ContrastPair, word_count


@dataclass(frozen=True)
class LengthStats:
    """Word-length summary of one side of one trait's pairs."""

    mean: float
    min: int
    max: int


@dataclass(frozen=True)
class TraitStats:
    """Pair count and word lengths of both sides for one trait."""

    count: int
    positive: LengthStats
    negative: LengthStats


def pair_stats(pairs: Sequence[ContrastPair]) -> dict[str, TraitStats]:
    """Counts and word lengths per trait, keyed by trait in sorted order."""
    lengths: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for pair in pairs:
        positive, negative = lengths[pair.trait]
        positive.append(word_count(pair.positive))
        negative.append(word_count(pair.negative))
    return {
        trait: TraitStats(count=len(positive), positive=_summarize(positive), negative=_summarize(negative))
        for trait, (positive, negative) in sorted(lengths.items())
    }


def format_stats(stats: dict[str, TraitStats]) -> str:
    """A fixed-width table: pairs per trait and positive/negative word mean, min, max."""
    header = f"{'trait':<22}{'pairs':>6}   {'positive words':^17}   {'negative words':^17}"
    sub = f"{'':<22}{'':>6}   {'mean':>5} {'min':>5} {'max':>5}   {'mean':>5} {'min':>5} {'max':>5}"
    lines = [header, sub, "-" * len(sub)]
    for trait, row in stats.items():
        lines.append(f"{trait:<22}{row.count:>6}   {_cells(row.positive)}   {_cells(row.negative)}")
    total = sum(row.count for row in stats.values())
    lines.append("-" * len(sub))
    lines.append(f"{'total':<22}{total:>6}   ({len(stats)} traits)")
    return "\n".join(line.rstrip() for line in lines)


def _summarize(values: list[int]) -> LengthStats:
    return LengthStats(mean=sum(values) / len(values), min=min(values), max=max(values))


def _cells(length: LengthStats) -> str:
    return f"{length.mean:>5.1f} {length.min:>5} {length.max:>5}"
