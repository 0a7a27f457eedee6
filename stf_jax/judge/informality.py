"""Formality judge: the rate of informality markers, negated (higher = more formal).

    formality(text) = − 100 · (contractions + slang words + "!" + first/second-person pronouns) / words

Markers (the lexicon below, matched case-insensitively on whole words):
- contractions: a word with an inner apostrophe whose tail is n't, 's, 're, 've, 'll, 'd or 'm
  ("don't", "it's", "we'll"; possessives like "Anna's" count too — a blind spot), plus the apostrophe-
  free forms gonna, wanna, gotta, kinda, sorta, dunno, lemme, gimme, ain't, y'all;
- slang and chat words (`SLANG`): hey, yeah, yep, nope, ok, okay, lol, omg, btw, cool, awesome, stuff,
  guys, dude, super, totally, … ;
- exclamation marks (each "!" counts once);
- first- and second-person pronouns (`PRONOUNS`: I, me, my, we, us, our, you, your, …): Biber's
  "involved" register markers; formal writing is more impersonal.

Why this form: formality is mostly register (Heylighen & Dewaele's F-score contrasts deictic, involved
word classes with nouns and prepositions); the markers above are its most visible, countable part and
need no tagger.

Blind spots:
- It measures the absence of informal surface markers, not the presence of formal ones: an empty or
  telegraphic text scores as formal as a legal letter (0 markers); a formal letter in the first person
  ("I would be grateful…") loses points. Compare steered against unsteered text of the same prompts.
- Slang outside the list, emoji and lowercase-only writing are not counted.
- Rates on very short texts are noisy (one marker in 5 words = 20 per 100 words); an empty text has no
  rate (NaN) and is left out of means.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.text import per_100_words, words

CONTRACTION_TAILS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
CONTRACTION_WORDS = frozenset({"gonna", "wanna", "gotta", "kinda", "sorta", "dunno", "lemme", "gimme", "ain't",
                               "y'all", "ya", "cuz", "'cause", "outta", "gotcha"})
SLANG = frozenset({
    "hey", "hi", "hiya", "yeah", "yep", "yup", "nope", "nah", "ok", "okay", "lol", "omg", "btw", "imo", "tbh",
    "cool", "awesome", "stuff", "guys", "dude", "buddy", "super", "totally", "folks", "kids", "bucks",
    "wow", "yay", "oops", "whoa", "huh", "um", "uh", "hmm", "haha", "sec", "mate", "cheers", "thanks", "thx",
    "pls", "plz", "u", "ur", "gonna", "wanna", "gotta", "kinda", "sorta", "literally", "basically", "anyway",
    "crazy", "insane", "ugh", "meh", "bye", "chill", "yikes"})
PRONOUNS = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves",
                      "you", "your", "yours", "yourself", "yourselves"})
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'"})


def markers(text: str) -> dict[str, int]:
    """Counts of each marker kind, and the word count."""
    ws = [w.translate(_APOSTROPHES).lower() for w in words(text)]
    contractions = sum(1 for w in ws if w in CONTRACTION_WORDS or ("'" in w and w.endswith(CONTRACTION_TAILS)))
    slang = sum(1 for w in ws if w in SLANG and w not in CONTRACTION_WORDS)
    pronouns = sum(1 for w in ws if w in PRONOUNS)
    # "I'm", "you're", "we'll": the pronoun part counts as a pronoun too
    pronouns += sum(1 for w in ws if "'" in w and w.split("'")[0] in PRONOUNS)
    return {"contractions": contractions, "slang": slang, "exclamations": text.count("!"), "pronouns": pronouns,
            "words": len(ws)}


def informality_rate(text: str) -> float:
    """Informality markers per 100 words (NaN for a text with no words)."""
    m = markers(text)
    return per_100_words(m["contractions"] + m["slang"] + m["exclamations"] + m["pronouns"], m["words"])


def score(texts: Sequence[str]) -> np.ndarray:
    """Formality: minus the informality rate (higher = more formal)."""
    return np.array([-informality_rate(t) for t in texts], np.float64)

