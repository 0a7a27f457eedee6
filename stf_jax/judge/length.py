"""Verbosity judge: how many words a text uses (the Preference-Vector idea's "output length").

Measures: the word count (`stf_jax.core.text.words`), higher = more verbose; sentence count and mean
words per sentence are reported beside it (`length_profile`).

Blind spots:
- Generation is capped at `max_new_tokens`: a model that already fills the budget cannot get longer, so
  the judge sees "more verbose" only as fewer early stops and more, shorter words; "more concise" shows
  as earlier end-of-sequence. Compare conditions under the same cap, never across caps.
- Length is not verbosity: a list of terse facts can be long, and a padded answer can be short when it
  stops early. Repetition inflates length, which is why the behavioural evaluation reports a fluency
  guard (repetition rate, log-probability under the unsteered model) beside every judge change.
- Word counts depend on tokenization of the output only through the cap: words, not tokens, are counted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.text import sentences, words


def word_count(text: str) -> float:
    return float(len(words(text)))


def length_profile(text: str) -> dict[str, float]:
    """Words, sentences and mean words per sentence (NaN when there is no sentence)."""
    n_words, n_sent = len(words(text)), len(sentences(text))
    return {"words": float(n_words), "sentences": float(n_sent),
            "words_per_sentence": n_words / n_sent if n_sent else float("nan")}


def score(texts: Sequence[str]) -> np.ndarray:
    return np.array([word_count(t) for t in texts], np.float64)
