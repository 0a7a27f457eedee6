"""Hedging / certainty judge: hedges minus boosters per 100 words (Hyland's metadiscourse lexicon).

    hedging(text)   = 100 · (hedges − boosters) / words        (higher = more hedged)
    certainty(text) = − hedging(text)                          (higher = more certain)

Hedges withhold full commitment ("might", "perhaps", "I think", "it seems"); boosters close down
alternatives ("definitely", "clearly", "in fact"). The lists below follow the hedge and booster items of
Hyland's *Metadiscourse* (2005, appendix), trimmed of words that are mostly not epistemic in chat text
(e.g. "about", "would") and extended with conversational hedges ("not sure", "kind of", "I guess").
Multi-word items are matched first and their words are not counted again.

Blind spots:
- Lexical only: "could" in "I could not find it" counts as a hedge; negated boosters ("not certain")
  count as boosters unless listed as a hedge phrase ("not sure", "not certain" are).
- Certainty without markers (plain assertion) scores 0, the same as an empty text's NaN-free cousin:
  a text can be certain without a single booster, so `certainty` mostly detects the *absence of hedges*.
- Empty texts have no rate (NaN).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.text import per_100_words, words

HEDGES = (
    "not sure", "not certain", "i think", "i believe", "i guess", "i suppose", "i suspect", "i feel",
    "in my opinion", "it seems", "kind of", "sort of", "to some extent", "more or less", "it is possible",
    "it's possible", "as far as i know", "hard to say", "i'm not sure",
    "almost", "apparently", "appear", "appears", "appeared", "approximately", "arguably", "assume",
    "assumed", "broadly", "could", "doubt", "estimate", "estimated", "generally", "likely", "mainly", "may",
    "maybe", "might", "mostly", "often", "perhaps", "plausible", "plausibly", "possible", "possibly",
    "presumably", "probable", "probably", "relatively", "roughly", "seem", "seemed", "seemingly", "seems",
    "somewhat", "suggest", "suggests", "suppose", "supposedly", "tend", "tends", "typically", "uncertain",
    "unclear", "unlikely", "usually", "perhaps", "guess", "somehow", "conceivably",
)
BOOSTERS = (
    "in fact", "of course", "no doubt", "without doubt", "beyond doubt", "it is clear", "it's clear",
    "for sure", "there is no question",
    "actually", "always", "certain", "certainly", "clear", "clearly", "conclusively", "decidedly", "definite",
    "definitely", "demonstrate", "demonstrates", "demonstrated", "doubtless", "establish", "established",
    "evident", "evidently", "indeed", "indisputable", "indisputably", "must", "never", "obvious",
    "obviously", "prove", "proves", "proved", "proven", "really", "sure", "surely", "truly", "undeniable",
    "undeniably", "undoubtedly", "unquestionably", "guaranteed", "absolutely", "always", "completely",
)
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'"})


def _count(tokens: list[str], phrases: Sequence[str], used: list[bool]) -> int:
    """Count occurrences of the phrases in tokens, longest first, never reusing a token."""
    n = 0
    for phrase in sorted(set(phrases), key=lambda p: -len(p.split())):
        parts = phrase.split()
        k = len(parts)
        for i in range(len(tokens) - k + 1):
            if tokens[i:i + k] == parts and not any(used[i:i + k]):
                n += 1
                for j in range(i, i + k):
                    used[j] = True
    return n


def counts(text: str) -> dict[str, int]:
    """Hedge and booster counts and the word count."""
    tokens = [w.translate(_APOSTROPHES).lower() for w in words(text)]
    used = [False] * len(tokens)
    # multi-word items of both lists first (longest first), then single words
    multi = [p for p in (*HEDGES, *BOOSTERS) if " " in p]
    hedges = boosters = 0
    for phrase in sorted(set(multi), key=lambda p: -len(p.split())):
        c = _count(tokens, [phrase], used)
        if phrase in HEDGES:
            hedges += c
        else:
            boosters += c
    hedges += _count(tokens, [p for p in HEDGES if " " not in p], used)
    boosters += _count(tokens, [p for p in BOOSTERS if " " not in p], used)
    return {"hedges": hedges, "boosters": boosters, "words": len(tokens)}


def hedge_balance(text: str) -> float:
    """(hedges − boosters) per 100 words (NaN for a text with no words)."""
    c = counts(text)
    return per_100_words(c["hedges"] - c["boosters"], c["words"])


def score_hedging(texts: Sequence[str]) -> np.ndarray:
    return np.array([hedge_balance(t) for t in texts], np.float64)


def score_certainty(texts: Sequence[str]) -> np.ndarray:
    return -score_hedging(texts)

