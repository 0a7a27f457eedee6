"""Rebuild the paper's contrast pairs from the public datasets of its Table 4.

One recipe per trait, named by the trait. Each reads a local copy of its dataset
(see ``sources``), applies a deterministic, documented selection and pairing rule
(see each ``build_*`` docstring) and returns ContrastPairs in the shipped schema,
with ``source="recipe:<dataset>"`` and content-derived ids. The default cap is
the paper's pair count for that trait.

The three CNN/DailyMail recipes sample articles independently, so their outputs
can share an article's highlights (a few percent of pairs at the default caps); when
merging them, ``validate_pairs`` reports such shared texts and ``split_pairs``
keeps the pairs that share one on the same side.

Table 4 sources without a recipe, because the paper does not say how their pairs
were formed and no rule follows from the data: DebateSum (assertiveness,
"arguments vs questions": the corpus holds no questions), SILICONE (directness:
no mapping of its dialogue-act labels to direct/indirect speech is given),
Debiased News (objectivity: the release used is not identified) and ML ArXiv
Papers (specificity: the corpus has no general counterpart to its abstracts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stf_jax.data.recipes import labelled, news, parallel
from stf_jax.data.recipes.sources import DatasetSource, Row, SourceFormatError, SourceNotFoundError, iter_rows
from stf_jax.data.schema import ContrastPair


@dataclass(frozen=True)
class Recipe:
    """How to build one trait's pairs from one public dataset."""

    trait: str
    dataset: DatasetSource
    build: Callable[[Iterable[Row], int], list[ContrastPair]]
    default_max_pairs: int

    @property
    def summary(self) -> str:
        """First line of the builder's docstring: what is paired with what."""
        return (self.build.__doc__ or "").strip().splitlines()[0]


RECIPES: dict[str, Recipe] = {
    recipe.trait: recipe
    for recipe in (
        Recipe("accessibility", news.CNN_DAILYMAIL, news.build_accessibility, 5000),
        Recipe("authority", news.CNN_DAILYMAIL, news.build_authority, 3000),
        Recipe("clarity", news.NEWSROOM, news.build_clarity, 5000),
        Recipe("emotional_tone", labelled.GO_EMOTIONS, labelled.build_emotional_tone, 5000),
        Recipe("enthusiasm", labelled.EMOTION, labelled.build_enthusiasm, 5000),
        Recipe("formality", parallel.PARADETOX, parallel.build_formality, 4577),
        Recipe("inclusivity", labelled.MEASURING_HATE_SPEECH, labelled.build_inclusivity, 3000),
        Recipe("optimism", labelled.IMDB, labelled.build_optimism, 5000),
        Recipe("professionalism", labelled.CIVIL_COMMENTS, labelled.build_professionalism, 5000),
        Recipe("register", parallel.EMPATHETIC_DIALOGUES, parallel.build_register, 4000),
        Recipe("verbosity", news.CNN_DAILYMAIL, news.build_verbosity, 5000),
    )
}


def build_recipe(name: str, source: str | Path | None = None, max_pairs: int | None = None) -> list[ContrastPair]:
    """Build recipe ``name``'s pairs from ``source`` (or the default locations), sorted by id."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    cap = recipe.default_max_pairs if max_pairs is None else max_pairs
    if cap < 0:
        raise ValueError(f"max_pairs must be >= 0, got {cap}")
    return recipe.build(iter_rows(recipe.dataset, source), cap)


__all__ = ["RECIPES", "Recipe", "SourceFormatError", "SourceNotFoundError", "build_recipe"]
