"""Independent judges of steered text: does the text change the way the trait says?

The causal read-outs of `stf_jax.steer` (propensity on held-out pairs, the target's own projection of its
completions) are judged by the data or the model that made the vector. The judges here had no part in
making any vector: each is a documented lexicon or formula from a package that ships it, applied to the
generated text. Every judge maps texts to one number per text, oriented so that higher = more of the
trait (the pairs' `positive` side):

| trait | judge | module |
| --- | --- | --- |
| verbosity | words | `length` |
| formality | −(contractions + slang + "!" + 1st/2nd-person pronouns) per 100 words | `informality` |
| optimism, emotional_tone, enthusiasm | VADER compound, mean over sentences | `sentiment` |
| technical_complexity | % words off the Dale–Chall familiar list (textstat) | `readability` |
| accessibility | −Coleman–Liau grade (textstat) | `readability` |
| hedging / certainty | ±(hedges − boosters) per 100 words (Hyland's lexicon) | `hedging` |

Each module's docstring says what its judge measures and its blind spots; `fluency` holds the guard that
keeps "the judge moved" from coming from degenerate text. Nothing here imports JAX or PyTorch except
`fluency.unsteered_logprob` (JAX, on first use) and the evaluations (`behaviour`, `ood`, `fewshot`).

    from stf_jax.judge import JUDGES, score
    score("formality", ["Hey, can you send it?", "Could you kindly forward it?"])   # array([-40., -20.])
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from . import hedging, informality, length, readability, sentiment


@dataclasses.dataclass(frozen=True)
class Judge:
    """One trait's judge: `fn(texts) -> [n]` scores (higher = more of the trait), with its documentation."""

    trait: str
    name: str
    unit: str
    fn: Callable[[Sequence[str]], np.ndarray]
    measures: str
    blind_spots: str

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.fn(list(texts)), np.float64)


_VADER_BLIND = ("valence is not the trait: neutral wording of good news scores 0; optimism, emotional tone and "
                "enthusiasm share one axis; sarcasm is read literally")
JUDGES: dict[str, Judge] = {j.trait: j for j in (
    Judge("verbosity", "words", "words", length.score, "words in the text",
          "capped by max_new_tokens (longer = fewer early stops); repetition inflates length"),
    Judge("formality", "-informality_per_100w", "markers / 100 words", informality.score,
          "minus contractions, slang, '!' and 1st/2nd-person pronouns per 100 words",
          "absence of informal markers, not presence of formal ones; first-person formal letters lose points"),
    Judge("optimism", "vader_compound", "compound [-1, 1]", sentiment.score,
          "VADER compound valence, mean over sentences", _VADER_BLIND),
    Judge("emotional_tone", "vader_compound", "compound [-1, 1]", sentiment.score,
          "VADER compound valence, mean over sentences", _VADER_BLIND),
    Judge("enthusiasm", "vader_compound", "compound [-1, 1]", sentiment.score,
          "VADER compound valence (boosted by '!', caps, intensifiers), mean over sentences", _VADER_BLIND),
    Judge("technical_complexity", "dale_chall_difficult_pct", "% words", readability.score_technical,
          "percentage of words not on the Dale-Chall familiar-word list",
          "names and inflected easy words count as difficult; jargon acronyms can be on no list"),
    Judge("accessibility", "-coleman_liau", "-grade", readability.score_accessibility,
          "minus the Coleman-Liau grade (letters per word, words per sentence)",
          "rewards short words and sentences whatever the content; truncated last sentences"),
    Judge("hedging", "hedges-boosters_per_100w", "per 100 words", hedging.score_hedging,
          "Hyland hedges minus boosters per 100 words", "lexical: 'could not' is a hedge; plain assertion scores 0"),
    Judge("certainty", "boosters-hedges_per_100w", "per 100 words", hedging.score_certainty,
          "Hyland boosters minus hedges per 100 words", "mostly detects the absence of hedges"),
)}


class UnknownTraitError(UserError, ValueError):
    """No judge for this trait."""


def judge_for(trait: str) -> Judge:
    if trait not in JUDGES:
        raise UnknownTraitError(f"no judge for trait {trait!r}; judged traits: {', '.join(JUDGES)}")
    return JUDGES[trait]


def score(trait: str, texts: Sequence[str]) -> np.ndarray:
    """Judge scores [n] of `texts` for `trait` (higher = more of the trait; NaN where a rate is undefined)."""
    return judge_for(trait)(texts)


__all__ = ["JUDGES", "Judge", "UnknownTraitError", "judge_for", "score"]
