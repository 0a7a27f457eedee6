"""Corpora that already pair two versions of one text: ParaDetox (formality), Empathetic Dialogues (register)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stf_jax.data.recipes.common import clean_text, sample_pairs, stable_key, usable, within_ratio
from stf_jax.data.recipes.sources import DatasetSource, Row
from stf_jax.data.schema import ContrastPair, normalize_text

PARADETOX = DatasetSource(
    name="paradetox",
    hf_id="s-nlp/paradetox",
    columns={"toxic": ("en_toxic_comment", "toxic"), "neutral": ("en_neutral_comment", "neutral1")},
    layouts=(
        "Hugging Face train.tsv (or parquet) with columns en_toxic_comment, en_neutral_comment",
        "GitHub paradetox/paradetox.tsv with columns toxic, neutral1, neutral2, neutral3",
    ),
)

EMPATHETIC_DIALOGUES = DatasetSource(
    name="empathetic_dialogues",
    hf_id="facebook/empathetic_dialogues",
    hf_aliases=("empathetic_dialogues",),
    columns={
        "conv_id": ("conv_id",),
        "utterance_idx": ("utterance_idx",),
        "prompt": ("prompt",),
        "utterance": ("utterance",),
    },
    layouts=(
        "original empatheticdialogues/{train,valid,test}.csv with columns "
        "conv_id, utterance_idx, context, prompt, speaker_idx, utterance, selfeval, tags",
        "Hugging Face parquet with the same columns",
    ),
)


def build_formality(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """The crowd-written neutral rewrite (formal) against the toxic original (informal).

    A toxic sentence with several rewrites contributes one pair, the rewrite
    with the smallest key; pairs whose sides are equal after normalization or
    differ more than 2x in length are skipped.
    """
    best: dict[str, tuple[int, str, str]] = {}
    for row in rows:
        toxic, neutral = clean_text(row["toxic"] or ""), clean_text(row["neutral"] or "")
        if not (usable(toxic) and usable(neutral) and within_ratio(toxic, neutral)):
            continue
        if normalize_text(toxic) == normalize_text(neutral):
            continue
        key = stable_key("formality", neutral, toxic)
        current = best.get(normalize_text(toxic))
        if current is None or key < current[0]:
            best[normalize_text(toxic)] = (key, neutral, toxic)
    return sample_pairs("paradetox", "formality", ((neutral, toxic) for _, neutral, toxic in best.values()), max_pairs)


def build_register(rows: Iterable[Row], max_pairs: int) -> list[ContrastPair]:
    """The written situation description against the opening chat turn.

    Each conversation has a "prompt", the speaker's written account of the
    situation, and utterance 1, the speaker raising the same situation in chat:
    same author and content, written versus conversational register. The
    release writes commas as "_comma_"; they are restored.
    """

    def candidates() -> Iterator[tuple[str, str]]:
        for row in rows:
            if str(row["utterance_idx"]).strip() != "1":
                continue
            written = clean_text((row["prompt"] or "").replace("_comma_", ","))
            spoken = clean_text((row["utterance"] or "").replace("_comma_", ","))
            if not (usable(written) and usable(spoken) and within_ratio(written, spoken)):
                continue
            if normalize_text(written) != normalize_text(spoken):
                yield written, spoken

    return sample_pairs("empathetic_dialogues", "register", candidates(), max_pairs)
