"""Readability judges (technical complexity, accessibility) from `textstat`'s formulas and word list.

- technical_complexity: the Dale–Chall *difficult-word rate*, the percentage of words (letters only,
  lowercased) that are not on the Dale–Chall list of ~2,950 words familiar to 4th-graders (the list
  textstat ships). Higher = more technical vocabulary.
- accessibility: minus the Coleman–Liau index (`textstat.coleman_liau_index`, a US grade level from
  letters per 100 words L and sentences per 100 words S: 0.058·L − 0.296·S − 15.8, textstat's
  coefficients). Higher = easier.

Why these two formulas: neither needs syllable counts. textstat's English syllable counter loads NLTK's
CMU dictionary and downloads it at first use, which fails offline and would make scores depend on the
machine; the Dale–Chall list and Coleman–Liau use only letters, words and sentences.

Blind spots:
- Word familiarity is not technicality: proper names, numbers spelled as words and inflected forms of
  easy words ("walked" is not on the list) count as difficult; so text about "Denver" or "Priya" looks
  technical. Steered-minus-unsteered differences on the same prompts cancel most of this.
- Coleman–Liau rewards short words and short sentences, whatever their content; a terse text full of
  jargon acronyms ("API", "RAM") reads as accessible. Truncated generations end mid-sentence, which
  lengthens the last "sentence".
- Both are noisy below ~20 words; an empty text has no score (NaN).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import numpy as np

from .sentiment import JudgeDependencyError
from ..core.text import per_100_words, words


@lru_cache(maxsize=1)
def _textstat():
    try:
        import textstat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise JudgeDependencyError("the readability judges need textstat: pip install 'stf_jax[judge]'") from exc
    return textstat


@lru_cache(maxsize=1)
def easy_words() -> frozenset[str]:
    """The Dale–Chall familiar-word list as textstat ships it (lowercase)."""
    _textstat()
    from textstat.backend.utils import get_lang_easy_words

    return frozenset(get_lang_easy_words("en_US"))


_LETTERS = re.compile(r"[^a-z]")


def difficult_words(text: str) -> list[str]:
    """Words not on the Dale–Chall list (lowercased, apostrophes and non-letters removed; numbers skipped)."""
    easy = easy_words()
    out = []
    for w in words(text):
        key = _LETTERS.sub("", w.lower())
        if key and key not in easy:
            out.append(w)
    return out


def difficult_word_rate(text: str) -> float:
    """Percentage of words that are not on the Dale–Chall list (NaN for a text with no words)."""
    n = sum(1 for w in words(text) if _LETTERS.sub("", w.lower()))
    return per_100_words(len(difficult_words(text)), n)


def coleman_liau(text: str) -> float:
    """textstat's Coleman–Liau grade (NaN for a text with no words)."""
    if not words(text):
        return float("nan")
    return float(_textstat().coleman_liau_index(text))


def score_technical(texts: Sequence[str]) -> np.ndarray:
    return np.array([difficult_word_rate(t) for t in texts], np.float64)


def score_accessibility(texts: Sequence[str]) -> np.ndarray:
    return np.array([-coleman_liau(t) for t in texts], np.float64)
