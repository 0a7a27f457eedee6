"""Valence judge (optimism, emotional tone, enthusiasm): VADER's compound score, averaged over sentences.

VADER (`vaderSentiment`, Hutto & Gilbert 2014) ships a human-rated lexicon of ~7,500 words, emoticons
and slang with rules for negation ("not good"), degree words ("very", "extremely"), "but", ALL-CAPS and
exclamation marks. Its `compound` score lies in [−1, 1]. VADER is built for sentences; on a paragraph the
compound saturates towards ±1, so, as its documentation recommends for longer texts, each sentence
(`stf_jax.core.text.sentences`) is scored and the compounds are averaged:

    valence(text) = mean over sentences of compound(sentence)        (0.0 for a text with no sentence)

Used for three traits, higher = more of the trait:
- optimism: positive outlook ("should be back on track") vs pessimism ("I doubt it will recover");
- emotional_tone: positive vs negative feeling (the shipped pairs' positive side is the happy one);
- enthusiasm: excited vs flat delivery; VADER's boosts for "!", caps and intensifiers carry most of it.

Blind spots:
- Valence is not optimism: a sentence about a future recovery with neutral words ("sales should return
  to last year's level") scores 0; hedged pessimism and cheerful wording of bad news confuse it.
- Enthusiasm and positive valence are different traits that VADER scores on one axis: a calm, warm text
  and an excited one can tie. Effects on the three traits are therefore not independent evidence.
- Domain words outside the lexicon (technical, financial) are neutral; sarcasm is read literally.
- An empty text scores 0 (neutral), not NaN; check the fluency guard for empty generations.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from ..core.text import sentences


class JudgeDependencyError(ImportError):
    """A judge's package is not installed."""


@lru_cache(maxsize=1)
def analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise JudgeDependencyError("the sentiment judge needs vaderSentiment: pip install 'stf_jax[judge]'") from exc
    return SentimentIntensityAnalyzer()


def valence(text: str) -> float:
    sents = sentences(text)
    if not sents:
        return 0.0
    a = analyzer()
    return float(np.mean([a.polarity_scores(s)["compound"] for s in sents]))


def score(texts: Sequence[str]) -> np.ndarray:
    return np.array([valence(t) for t in texts], np.float64)
