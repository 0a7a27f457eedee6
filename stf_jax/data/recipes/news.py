"""News summarization corpora: CNN/DailyMail (verbosity, accessibility, authority) and Newsroom (clarity).

Both pair an article with a summary written for it, so the two sides of a pair
report the same story. The paper (Table 4, A.2) contrasts the full article with
its summary for verbosity, the complex article with the simple highlights for
accessibility, and complex with clear text (Newsroom) for clarity; for those
two the article side is cut to its leading sentences of about the summary's
length, so the pair differs in style rather than in length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from stf_jax.data.recipes.common import (
    MAX_WORDS,
    clean_text,
    leading_words,
    sample_pairs,
    sentences,
    usable,
    within_ratio,
)
from stf_jax.data.recipes.sources import TABLE_PATTERNS, DatasetSource, Row
from stf_jax.data.schema import ContrastPair, word_count

# "LONDON, England (Reuters) -- " and "(CNN) -- " datelines open many articles.
_DATELINE = re.compile(r"^.{0,120}?\((?:CNN|Reuters|AP|EW\.com)\)\s*(?:--|-|—)\s*")
# Daily Mail pages open with "By . Author . PUBLISHED: . 10:01 EST, ..." bylines.
_BYLINE = re.compile(r"^By \.|\b(?:PUBLISHED|UPDATED|Last updated at)\s*:", re.IGNORECASE)
# Words that attribute a claim to a source ("police said", "according to").
_ATTRIBUTION = re.compile(
    r"\b(?:said|says|according to|told|reported|announced|confirmed|stated|officials?|spokes(?:man|woman|person))\b",
    re.IGNORECASE,
)


def read_story(path: Path) -> Iterator[Row]:
    """One row from a .story file of the original CNN/DailyMail release.

    The article is every paragraph before the first "@highlight" line; each
    "@highlight" is followed by one highlight sentence.
    """
    article: list[str] = []
    highlights: list[str] = []
    expect_highlight = False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line == "@highlight":
            expect_highlight = True
        elif expect_highlight:
            highlights.append(line)
            expect_highlight = False
        else:
            article.append(line)
    yield {"id": path.stem, "article": " ".join(article), "highlights": "\n".join(highlights)}


CNN_DAILYMAIL = DatasetSource(
    name="cnn_dailymail",
    hf_id="abisee/cnn_dailymail",
    hf_aliases=("cnn_dailymail",),
    columns={"article": ("article",), "highlights": ("highlights",)},
    patterns=("**/3.0.0/*.parquet", *TABLE_PATTERNS, "**/*.story"),
    readers={".story": read_story},
    layouts=(
        "Hugging Face parquet: 3.0.0/{train,validation,test}-*.parquet with columns article, highlights, id",
        "CSV export with columns id, article, highlights",
        "original release: cnn/stories/*.story and dailymail/stories/*.story",
    ),
)

NEWSROOM = DatasetSource(
    name="newsroom",
    hf_id="lil-lab/newsroom",
    hf_aliases=("newsroom",),
    columns={"text": ("text",), "summary": ("summary",)},
    layouts=(
        "release files train.jsonl, dev.jsonl, test.jsonl (or .jsonl.gz) with fields text, summary, title, url, ...",
    ),
)


def _article_sentences(article: str) -> list[str]:
    """Cleaned article sentences with the dateline removed; [] for Daily Mail byline debris."""
    text = _DATELINE.sub("", clean_text(article))
    head = " ".join(text.split()[:40])
    return [] if _BYLINE.search(head) else sentences(text)


def _summary(highlights: str) -> str:
    """Highlight lines joined into one paragraph, each ending with punctuation."""
    lines = [clean_text(line) for line in highlights.splitlines() if line.strip()]
    return " ".join(line if line[-1] in ".!?\"'" else line + "." for line in lines)


def build_verbosity(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Positive: the article (whole sentences, up to MAX_WORDS words). Negative: its highlights.

    Kept when the article side has at least three times the highlights' words.
    """

    def candidates() -> Iterator[tuple[str, str]]:
        for row in rows:
            summary = _summary(row["highlights"] or "")
            article = _truncate(_article_sentences(row["article"] or ""), MAX_WORDS)
            if usable(summary) and word_count(article) >= 3 * word_count(summary):
                yield article, summary

    return sample_pairs("cnn_dailymail", "verbosity", candidates(), max_pairs)


def build_accessibility(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Positive: the highlights (short plain sentences). Negative: the article's lead.

    The lead is the article's opening sentences up to at least the highlights'
    word count; pairs beyond the 2x length ratio are dropped.
    """
    return _summary_vs_lead(rows, "cnn_dailymail", "accessibility", "article", "highlights", max_pairs)


def build_clarity(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Positive: the summary (clear). Negative: the article's lead of similar length (complex)."""
    return _summary_vs_lead(rows, "newsroom", "clarity", "text", "summary", max_pairs)


def build_authority(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Positive: article sentences that attribute their claims. Negative: the highlights.

    The paper contrasts "news vs social media" but says no more. This recipe's
    proxy: the article's first sentences that name a source ("..., police
    said", "according to officials"), up to about the highlights' length,
    against the highlights, which state the same facts bare. Articles with no
    attributed sentence, and pairs beyond the 2x length ratio, are skipped.
    """

    def candidates() -> Iterator[tuple[str, str]]:
        for row in rows:
            summary = _summary(row["highlights"] or "")
            attributed = [part for part in _article_sentences(row["article"] or "") if _ATTRIBUTION.search(part)]
            lead = leading_words(attributed, min_words=word_count(summary))
            if usable(summary) and usable(lead) and within_ratio(lead, summary):
                yield lead, summary

    return sample_pairs("cnn_dailymail", "authority", candidates(), max_pairs)


def _summary_vs_lead(
    rows: Iterable[Row], dataset: str, trait: str, article_column: str, summary_column: str, max_pairs: int
) -> list[ContrastPair]:
    def candidates() -> Iterator[tuple[str, str]]:
        for row in rows:
            summary = _summary(row[summary_column] or "")
            lead = leading_words(_article_sentences(row[article_column] or ""), min_words=word_count(summary))
            if usable(summary) and usable(lead) and within_ratio(lead, summary) and lead != summary:
                yield summary, lead

    return sample_pairs(dataset, trait, candidates(), max_pairs)


def _truncate(parts: list[str], max_words: int) -> str:
    """The longest run of leading sentences within ``max_words`` words."""
    taken: list[str] = []
    count = 0
    for part in parts:
        if count + word_count(part) > max_words:
            break
        taken.append(part)
        count += word_count(part)
    return " ".join(taken)
