"""Labelled single-text corpora: IMDB, GoEmotions, Emotion, Civil Comments, Measuring Hate Speech.

These datasets label texts but never pair them, so each recipe splits the texts
into a high and a low pool by label and pairs the pools by length rank
(``pair_by_length``): the two sides of a pair share the label contrast and a
similar length, not their content.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stf_jax.data.recipes.common import clean_text, pair_by_length
from stf_jax.data.recipes.sources import TABLE_PATTERNS, DatasetSource, Row, SourceFormatError
from stf_jax.data.schema import ContrastPair

GOEMOTIONS_LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
# The paper's grouping (A.2): positive = joy, love, optimism; negative = sadness, anger, fear.
GOEMOTIONS_POSITIVE = frozenset(GOEMOTIONS_LABELS.index(name) for name in ("joy", "love", "optimism"))
GOEMOTIONS_NEGATIVE = frozenset(GOEMOTIONS_LABELS.index(name) for name in ("sadness", "anger", "fear"))
EMOTION_LABELS: tuple[str, ...] = ("sadness", "joy", "love", "anger", "fear", "surprise")
CIVIL_CLEAN_MAX = 0.0
CIVIL_TOXIC_MIN = 0.5
# Measuring Hate Speech score bands from its card: > 0.5 hateful, < -1 supportive or counter speech.
HATE_SUPPORTIVE_MAX = -1.0
HATE_HATEFUL_MIN = 0.5


def read_imdb_review(path: Path) -> Iterator[Row]:
    """One review of the original aclImdb release: <split>/{pos,neg}/<id>_<stars>.txt."""
    yield {"text": path.read_text(encoding="utf-8"), "label": path.parent.name}


def read_goemotions_tsv(path: Path) -> Iterator[Row]:
    """Rows of the original GoEmotions data/{train,dev,test}.tsv: text, comma-separated label ids, id; no header."""
    with open(path, encoding="utf-8", newline="") as handle:
        for record in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(record) != 3:
                raise SourceFormatError(
                    f"{path}: expected 3 tab-separated fields (text, labels, id), got {len(record)}"
                )
            yield {"text": record[0], "labels": record[1], "id": record[2]}


def read_emotion_txt(path: Path) -> Iterator[Row]:
    """Rows of the original Emotion release {train,val,test}.txt: "text;label" per line."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            text, separator, label = line.rstrip("\n").rpartition(";")
            if not separator:
                raise SourceFormatError(f"{path}:{line_number}: expected 'text;label'")
            yield {"text": text, "label": label}


IMDB = DatasetSource(
    name="imdb",
    hf_id="stanfordnlp/imdb",
    hf_aliases=("imdb",),
    columns={"text": ("text", "review"), "label": ("label", "sentiment")},
    patterns=("**/plain_text/*.parquet", *TABLE_PATTERNS, "**/[pn][oe][sg]/*.txt"),
    readers={".txt": read_imdb_review},
    layouts=(
        "Hugging Face parquet: plain_text/{train,test,unsupervised}-*.parquet with columns text, label (0 neg, 1 pos)",
        "original aclImdb/{train,test}/{pos,neg}/*.txt",
        "CSV with columns review, sentiment (positive/negative)",
    ),
)

GO_EMOTIONS = DatasetSource(
    name="go_emotions",
    hf_id="google-research-datasets/go_emotions",
    hf_aliases=("go_emotions",),
    columns={"text": ("text",), "labels": ("labels",)},
    patterns=("**/simplified/*.parquet", *TABLE_PATTERNS),
    readers={".tsv": read_goemotions_tsv},
    layouts=(
        "Hugging Face parquet: simplified/{train,validation,test}-*.parquet "
        "with columns text, labels (list of ids), id",
        "original data/{train,dev,test}.tsv: text <TAB> comma-separated label ids <TAB> id, no header",
    ),
)

EMOTION = DatasetSource(
    name="emotion",
    hf_id="dair-ai/emotion",
    hf_aliases=("emotion",),
    columns={"text": ("text",), "label": ("label",)},
    patterns=("**/split/*.parquet", *TABLE_PATTERNS, "**/*.txt"),
    readers={".txt": read_emotion_txt},
    layouts=(
        "Hugging Face parquet: split/{train,validation,test}-*.parquet with columns text, label "
        "(0 sadness, 1 joy, 2 love, 3 anger, 4 fear, 5 surprise)",
        "original {train,val,test}.txt with one 'text;label-name' per line",
    ),
)

CIVIL_COMMENTS = DatasetSource(
    name="civil_comments",
    hf_id="google/civil_comments",
    hf_aliases=("civil_comments",),
    columns={"text": ("text", "comment_text"), "toxicity": ("toxicity", "target")},
    layouts=(
        "Hugging Face parquet: data/{train,validation,test}-*.parquet "
        "with columns text, toxicity, severe_toxicity, ...",
        "Jigsaw Unintended Bias CSV: train.csv (id, target, comment_text, ...) or test_*_expanded.csv (toxicity)",
    ),
)

MEASURING_HATE_SPEECH = DatasetSource(
    name="measuring_hate_speech",
    hf_id="ucberkeley-dlab/measuring-hate-speech",
    columns={"text": ("text",), "score": ("hate_speech_score",)},
    layouts=(
        "measuring-hate-speech.parquet (or .csv): one row per annotation with comment_id, text, hate_speech_score, ...",
    ),
)


def build_optimism(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Positive reviews (optimistic) against negative reviews (pessimistic), paired by length rank.

    Unlabelled reviews (label -1, the "unsupervised" split) are skipped.
    """

    def labelled() -> Iterator[tuple[str, bool]]:
        for row in rows:
            polarity = _imdb_polarity(row["label"])
            if polarity is not None:
                yield clean_text(row["text"] or ""), polarity

    return pair_by_length("imdb", "optimism", labelled(), max_pairs)


def build_emotional_tone(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Comments labelled joy/love/optimism against sadness/anger/fear, paired by length rank.

    A comment counts when it carries labels of one group and none of the other.
    """

    def labelled() -> Iterator[tuple[str, bool]]:
        for row in rows:
            labels = _label_ids(row["labels"])
            positive, negative = bool(labels & GOEMOTIONS_POSITIVE), bool(labels & GOEMOTIONS_NEGATIVE)
            if positive != negative:
                yield clean_text(row["text"] or ""), positive

    return pair_by_length("go_emotions", "emotional_tone", labelled(), max_pairs)


def build_enthusiasm(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """ "Joy" tweets (enthusiastic) against "sadness" tweets, paired by length rank.

    The paper pairs "enthusiastic vs neutral", but the dataset has no neutral
    class; sadness, the low-arousal class, stands in for the low end.
    """

    def labelled() -> Iterator[tuple[str, bool]]:
        for row in rows:
            label = _emotion_label(row["label"])
            if label in ("joy", "sadness"):
                yield clean_text(row["text"] or ""), label == "joy"

    return pair_by_length("emotion", "enthusiasm", labelled(), max_pairs)


def build_professionalism(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Comments no annotator found toxic against comments most found toxic.

    Positive: toxicity <= 0.0; negative: toxicity >= 0.5; paired by length rank.
    """

    def labelled() -> Iterator[tuple[str, bool]]:
        for row in rows:
            toxicity = _number(row["toxicity"])
            if toxicity <= CIVIL_CLEAN_MAX or toxicity >= CIVIL_TOXIC_MIN:
                yield clean_text(row["text"] or ""), toxicity <= CIVIL_CLEAN_MAX

    return pair_by_length("civil_comments", "professionalism", labelled(), max_pairs)


def build_inclusivity(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """Supportive or counter speech against hate speech, paired by length rank.

    Positive: hate_speech_score <= -1; negative: >= 0.5. The file has one row per
    annotation; each comment is used once.
    """

    def labelled() -> Iterator[tuple[str, bool]]:
        for row in rows:
            score = _number(row["score"])
            if score <= HATE_SUPPORTIVE_MAX or score >= HATE_HATEFUL_MIN:
                yield clean_text(row["text"] or ""), score <= HATE_SUPPORTIVE_MAX

    return pair_by_length("measuring_hate_speech", "inclusivity", labelled(), max_pairs)


def _imdb_polarity(label: Any) -> bool | None:
    """True for a positive review, False for negative, None for unlabelled."""
    value = str(label).strip().lower()
    if value in ("1", "pos", "positive"):
        return True
    if value in ("0", "neg", "negative"):
        return False
    if value in ("-1", "unsup"):
        return None
    raise SourceFormatError(f"imdb: unexpected label {label!r}")


def _label_ids(labels: Any) -> set[int]:
    """GoEmotions label ids from a list (parquet) or a "17,20" / "[17, 20]" string (TSV, CSV)."""
    if isinstance(labels, (list, tuple)):
        return {int(label) for label in labels}
    return {int(label) for label in re.findall(r"\d+", str(labels))}


def _emotion_label(label: Any) -> str:
    """Emotion class name from an id (parquet) or a name (original .txt)."""
    value = str(label).strip().lower()
    if value.isdigit() and int(value) < len(EMOTION_LABELS):
        return EMOTION_LABELS[int(value)]
    if value in EMOTION_LABELS:
        return value
    raise SourceFormatError(f"emotion: unexpected label {label!r}")


def _number(value: Any) -> float:
    """A float from a numeric cell; CSV cells arrive as strings."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SourceFormatError(f"expected a number, got {value!r}") from None
