"""Recipes for the paper's public datasets, each run on a small fixture in the dataset's published format."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from stf_jax.data import ContrastPair, load_pairs, normalize_text, validate_pairs, word_count
from stf_jax.data.__main__ import main
from stf_jax.data.recipes import RECIPES, SourceFormatError, SourceNotFoundError, build_recipe

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every default location at empty folders, so only what a test writes is found."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for variable in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "STF_DATASETS_DIR"):
        monkeypatch.delenv(variable, raising=False)


def _parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _tsv(path: Path, rows: list[dict]) -> Path:
    """A TSV as the ParaDetox releases publish it: header line, tab-separated, nothing quoted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(rows[0])] + ["\t".join(str(value) for value in row.values()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _texts(pairs: list[ContrastPair]) -> set[tuple[str, str]]:
    return {(pair.positive, pair.negative) for pair in pairs}


def _check_schema(pairs: list[ContrastPair], trait: str, dataset: str) -> None:
    assert pairs, "recipe built no pairs"
    assert all(
        p.trait == trait and p.source == f"recipe:{dataset}" and p.id.startswith(f"{dataset}-{trait}-") for p in pairs
    )
    assert [p.id for p in pairs] == sorted(p.id for p in pairs)
    report = validate_pairs(pairs, min_per_trait=1)
    assert report.ok, report.render()


# --- CNN/DailyMail ---------------------------------------------------------------------

CNN_ROWS = [
    {
        "id": "a1",
        "article": "(CNN) -- Firefighters in northern California contained most of a wildfire on Sunday after three "
        "days of strong winds, officials said. The blaze burned about 4,000 acres near Redding and destroyed twelve "
        "homes. No deaths were reported, according to the county sheriff. Residents who had been evacuated on Friday "
        "were allowed to return to most neighborhoods by Sunday evening. The cause of the fire is still under "
        "investigation, a fire department spokesman told reporters. Crews expect full containment by Wednesday if "
        "the weather stays calm and dry.",
        "highlights": "Wildfire near Redding, California, is mostly contained .\nBlaze burned 4,000 acres and "
        "destroyed twelve homes .\nEvacuated residents allowed to return",
    },
    {
        "id": "a2",
        "article": "LONDON, England (Reuters) -- A rare copy of a 17th-century atlas sold for 1.2 million pounds at "
        "auction on Tuesday, the auction house said. The book, printed in Amsterdam in 1662, contains nearly six "
        "hundred hand-colored maps. It had belonged to the same Scottish family for more than two hundred years. "
        "The buyer, a private collector from Switzerland, bid by telephone, according to a statement from the sale "
        "room. The price was almost double the estimate published before the sale. Experts say fewer than twenty "
        "complete copies of the atlas survive in good condition today.",
        "highlights": "Rare 1662 atlas sells for 1.2 million pounds at London auction .\nBook holds nearly six "
        "hundred hand-colored maps .\nPrice nearly double the estimate",
    },
    {
        "id": "a3",
        "article": "(CNN) -- A small bakery in Vermont has won a national award for its sourdough bread, the judges "
        "announced on Monday. The shop, which opened only four years ago, employs six people and bakes every loaf by "
        "hand. Its owner started the business after losing her office job during the recession. The judges praised "
        "the bread's crisp crust and deep flavor, a spokeswoman for the competition said. Demand has tripled since "
        "the news spread, and customers now queue outside the door before dawn. The owner plans to hire two more "
        "bakers this spring to keep up with orders.",
        "highlights": "Vermont bakery wins national award for sourdough bread .\nShop opened four years ago and "
        "bakes every loaf by hand .\nDemand has tripled since the award",
    },
    {
        "id": "dm1",
        "article": "By . Daily Mail Reporter . PUBLISHED: . 08:12 EST, 3 May 2013 . | . UPDATED: . 09:40 EST, 3 May "
        "2013 . A council has spent thousands of pounds on a new sign that spells the town's name wrong, residents "
        "said. The sign was put up last week at the main roundabout and was noticed by a schoolboy on his way to "
        "class. Officials admitted the mistake and promised to replace it within a month at no extra cost.",
        "highlights": "Council sign spells the town's name wrong .\nSchoolboy spotted the mistake on his way to "
        "class .\nOfficials promise to replace it",
    },
]


def _cnn_parquet(root: Path, rows: list[dict] = CNN_ROWS) -> Path:
    _parquet(root / "3.0.0" / "train-00000-of-00001.parquet", rows)
    # An older version in the same repository must be ignored in favour of 3.0.0.
    _parquet(root / "1.0.0" / "train-00000-of-00001.parquet", [{**CNN_ROWS[0], "article": "Old version text."}])
    return root


def test_verbosity_pairs_article_with_highlights(tmp_path: Path) -> None:
    pairs = build_recipe("verbosity", source=_cnn_parquet(tmp_path / "cnn"))
    _check_schema(pairs, "verbosity", "cnn_dailymail")
    assert len(pairs) == 3  # the Daily Mail byline article is skipped
    by_summary = {p.negative: p.positive for p in pairs}
    summary = (
        "Wildfire near Redding, California, is mostly contained. Blaze burned 4,000 acres and destroyed twelve homes. "
        "Evacuated residents allowed to return."
    )
    assert by_summary[summary].startswith("Firefighters in northern California contained")
    assert by_summary[summary].endswith("if the weather stays calm and dry.")
    assert all(word_count(p.positive) >= 3 * word_count(p.negative) for p in pairs)


def test_accessibility_pairs_highlights_with_article_lead(tmp_path: Path) -> None:
    pairs = build_recipe("accessibility", source=_cnn_parquet(tmp_path / "cnn"))
    _check_schema(pairs, "accessibility", "cnn_dailymail")
    for pair in pairs:
        assert pair.negative.endswith(".") and not pair.negative.startswith("(CNN)")
        assert word_count(pair.positive) <= word_count(pair.negative) <= 2 * word_count(pair.positive)
    leads = {p.negative.split()[0] for p in pairs}
    assert leads == {"Firefighters", "A"}


def test_authority_uses_attributed_sentences(tmp_path: Path) -> None:
    pairs = build_recipe("authority", source=_cnn_parquet(tmp_path / "cnn"))
    _check_schema(pairs, "authority", "cnn_dailymail")
    wildfire = next(p for p in pairs if "Redding" in p.negative)
    assert wildfire.positive == (
        "Firefighters in northern California contained most of a wildfire on Sunday after three days of strong "
        "winds, officials said. No deaths were reported, according to the county sheriff."
    )


def test_cnn_story_files_and_csv_match_parquet(tmp_path: Path) -> None:
    for row in CNN_ROWS:
        lines = [row["article"], ""] + [
            part for line in row["highlights"].split("\n") for part in ("@highlight", "", line, "")
        ]
        story = tmp_path / "cnn" / "stories" / f"{row['id']}.story"
        story.parent.mkdir(parents=True, exist_ok=True)
        story.write_text("\n".join(lines), encoding="utf-8")
    _csv(tmp_path / "kaggle" / "train.csv", CNN_ROWS)
    expected = _texts(build_recipe("verbosity", source=_cnn_parquet(tmp_path / "hf")))
    assert _texts(build_recipe("verbosity", source=tmp_path / "cnn")) == expected
    assert _texts(build_recipe("verbosity", source=tmp_path / "kaggle" / "train.csv")) == expected


def test_recipes_are_deterministic_and_capped(tmp_path: Path) -> None:
    full = build_recipe("verbosity", source=_cnn_parquet(tmp_path / "a"))
    assert build_recipe("verbosity", source=_cnn_parquet(tmp_path / "b", list(reversed(CNN_ROWS)))) == full
    capped = build_recipe("verbosity", source=tmp_path / "a", max_pairs=2)
    assert len(capped) == 2 and set(capped) <= set(full)
    assert build_recipe("verbosity", source=tmp_path / "a", max_pairs=0) == []


# --- Newsroom --------------------------------------------------------------------------


def test_clarity_reads_newsroom_jsonl_gz(tmp_path: Path) -> None:
    path = tmp_path / "newsroom" / "dev.jsonl.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in CNN_ROWS[:3]:
            summary = row["highlights"].replace(" .\n", ". ")
            record = {"text": row["article"], "summary": summary, "title": "t", "url": "u", "density": 1.0}
            handle.write(json.dumps(record) + "\n")
    pairs = build_recipe("clarity", source=tmp_path / "newsroom")
    _check_schema(pairs, "clarity", "newsroom")
    assert len(pairs) == 3 and {p.positive.split()[0] for p in pairs} == {"Wildfire", "Rare", "Vermont"}


# --- IMDB ------------------------------------------------------------------------------

IMDB_ROWS = [
    {
        "text": "A wonderful film.<br /><br />The acting is superb and the story made me smile all the way through.",
        "label": 1,
    },
    {"text": "One of the best movies I have seen this year, full of warmth, hope and clever jokes.", "label": 1},
    {
        "text": "Brilliant direction and a moving score; I left the cinema feeling that anything is possible.",
        "label": 1,
    },
    {"text": "A dull, lifeless film.<br />The acting is wooden and the plot never goes anywhere at all.", "label": 0},
    {"text": "One of the worst movies of the year, a grim waste of two hours that I will never get back.", "label": 0},
    {"text": "Nothing works here; the script is lazy and I left the cinema feeling cheated and tired.", "label": 0},
    {"text": "An unlabelled review from the unsupervised split that should never be used by the recipe.", "label": -1},
]


def test_optimism_pairs_positive_with_negative_reviews(tmp_path: Path) -> None:
    _parquet(tmp_path / "imdb" / "plain_text" / "train-00000-of-00001.parquet", IMDB_ROWS)
    pairs = build_recipe("optimism", source=tmp_path / "imdb")
    _check_schema(pairs, "optimism", "imdb")
    assert len(pairs) == 3
    positives = {normalize_text(r["text"].replace("<br />", " ")) for r in IMDB_ROWS if r["label"] == 1}
    assert {normalize_text(p.positive) for p in pairs} == positives
    assert all("<br" not in p.positive + p.negative and "unsupervised" not in p.negative for p in pairs)


def test_optimism_reads_aclimdb_layout(tmp_path: Path) -> None:
    for n, row in enumerate(IMDB_ROWS):
        folder = {1: "pos", 0: "neg", -1: "unsup"}[row["label"]]
        path = tmp_path / "aclImdb" / "train" / folder / f"{n}_7.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(row["text"], encoding="utf-8")
    _parquet(tmp_path / "hf" / "plain_text" / "train-00000-of-00001.parquet", IMDB_ROWS)
    assert build_recipe("optimism", source=tmp_path / "aclImdb") == build_recipe("optimism", source=tmp_path / "hf")


# --- GoEmotions ------------------------------------------------------------------------

# Label ids: 2 anger, 14 fear, 17 joy, 18 love, 20 optimism, 25 sadness, 0 admiration, 27 neutral.
GOEMOTION_ROWS = [
    {"text": "This is the happiest day of my life, thank you all so much!", "labels": [17], "id": "e1"},
    {"text": "I love this community and everyone who posts here every day.", "labels": [18, 0], "id": "e2"},
    {"text": "I really think things will get better for [NAME] next season.", "labels": [20], "id": "e3"},
    {"text": "I am so sad that the old bridge downtown is finally gone.", "labels": [25], "id": "e4"},
    {"text": "This makes me furious, they lied to every single one of us.", "labels": [2], "id": "e5"},
    {"text": "I am honestly scared to walk home alone after dark now.", "labels": [14], "id": "e6"},
    {"text": "Glad it is over, but it was painful to watch them lose.", "labels": [17, 25], "id": "e7"},
    {"text": "The game starts at eight and ends around ten tonight.", "labels": [27], "id": "e8"},
]


def test_emotional_tone_groups_goemotions_labels(tmp_path: Path) -> None:
    _parquet(tmp_path / "go" / "simplified" / "train-00000-of-00001.parquet", GOEMOTION_ROWS)
    pairs = build_recipe("emotional_tone", source=tmp_path / "go")
    _check_schema(pairs, "emotional_tone", "go_emotions")
    assert {p.positive for p in pairs} == {r["text"] for r in GOEMOTION_ROWS[:3]}
    assert {p.negative for p in pairs} == {r["text"] for r in GOEMOTION_ROWS[3:6]}


def test_emotional_tone_reads_original_tsv(tmp_path: Path) -> None:
    path = tmp_path / "goemotions" / "data" / "train.tsv"
    path.parent.mkdir(parents=True)
    lines = [f"{r['text']}\t{','.join(map(str, r['labels']))}\t{r['id']}" for r in GOEMOTION_ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _parquet(tmp_path / "hf" / "simplified" / "train-00000-of-00001.parquet", GOEMOTION_ROWS)
    assert build_recipe("emotional_tone", source=tmp_path / "goemotions") == build_recipe(
        "emotional_tone", source=tmp_path / "hf"
    )


# --- Emotion ---------------------------------------------------------------------------

EMOTION_ROWS = [
    ("i feel so excited about the trip we are taking next week", "joy"),
    ("i am feeling really cheerful and full of energy this morning", "joy"),
    ("i feel lonely and empty since my best friend moved away", "sadness"),
    ("i feel so gloomy about how the whole semester turned out", "sadness"),
    ("i feel angry that nobody listened to a single word i said", "anger"),
]
EMOTION_IDS = {"sadness": 0, "joy": 1, "love": 2, "anger": 3, "fear": 4, "surprise": 5}


def test_enthusiasm_pairs_joy_with_sadness(tmp_path: Path) -> None:
    rows = [{"text": text, "label": EMOTION_IDS[label]} for text, label in EMOTION_ROWS]
    _parquet(tmp_path / "emotion" / "split" / "train-00000-of-00001.parquet", rows)
    pairs = build_recipe("enthusiasm", source=tmp_path / "emotion")
    _check_schema(pairs, "enthusiasm", "emotion")
    assert {p.positive for p in pairs} == {t for t, label in EMOTION_ROWS if label == "joy"}
    assert {p.negative for p in pairs} == {t for t, label in EMOTION_ROWS if label == "sadness"}
    txt = tmp_path / "original" / "train.txt"
    txt.parent.mkdir()
    txt.write_text("".join(f"{text};{label}\n" for text, label in EMOTION_ROWS), encoding="utf-8")
    assert build_recipe("enthusiasm", source=txt) == pairs


# --- ParaDetox -------------------------------------------------------------------------


def test_formality_pairs_neutral_rewrite_with_toxic_original(tmp_path: Path) -> None:
    rows = [
        {
            "en_toxic_comment": 'this "plan" is total crap and you know it',
            "en_neutral_comment": 'this "plan" is bad and you know it',
        },
        {
            "en_toxic_comment": 'this "plan" is total crap and you know it',
            "en_neutral_comment": 'this "plan" is poor and you know it',
        },
        {
            "en_toxic_comment": "shut up you idiot , nobody asked for your opinion",
            "en_neutral_comment": "please be quiet , nobody asked for your opinion",
        },
        {
            "en_toxic_comment": "he is a damn liar and everyone here knows it",
            "en_neutral_comment": "he is a liar and everyone here knows it",
        },
        {
            "en_toxic_comment": "what the hell is wrong with this stupid printer",
            "en_neutral_comment": "what the hell is wrong with this stupid printer",
        },
    ]
    _tsv(tmp_path / "paradetox" / "train.tsv", rows)
    pairs = build_recipe("formality", source=tmp_path / "paradetox")
    _check_schema(pairs, "formality", "paradetox")
    assert len(pairs) == 3  # one pair per toxic sentence; the unchanged "rewrite" is dropped
    plan = next(p for p in pairs if "plan" in p.negative)
    assert plan.negative == 'this "plan" is total crap and you know it'
    assert plan.positive in ('this "plan" is bad and you know it', 'this "plan" is poor and you know it')
    assert "please be quiet, nobody asked for your opinion" in {p.positive for p in pairs}

    github = [
        {"toxic": r["en_toxic_comment"], "neutral1": r["en_neutral_comment"], "neutral2": "", "neutral3": ""}
        for r in rows[:1] + rows[2:]
    ]
    _tsv(tmp_path / "github" / "paradetox.tsv", github)
    assert len(build_recipe("formality", source=tmp_path / "github" / "paradetox.tsv")) == 3


# --- Civil Comments --------------------------------------------------------------------

CIVIL_ROWS = [
    ("Thank you for the clear summary of the council budget; the figures on page two were helpful.", 0.0),
    ("I respectfully disagree with the author, since the cited study measured a different population.", 0.0),
    ("Only morons would vote for this garbage plan, and the idiots who wrote it should be fired.", 0.8),
    ("What a pathetic, stupid article; the writer clearly has no clue about anything at all.", 0.6),
    ("This is somewhat rude but not really toxic in the view of most of the people who rated it.", 0.3),
]


def test_professionalism_splits_civil_comments_by_toxicity(tmp_path: Path) -> None:
    rows = [
        {
            "text": t,
            "toxicity": tox,
            "severe_toxicity": 0.0,
            "obscene": 0.0,
            "threat": 0.0,
            "insult": tox,
            "identity_attack": 0.0,
            "sexual_explicit": 0.0,
        }
        for t, tox in CIVIL_ROWS
    ]
    _parquet(tmp_path / "civil" / "data" / "train-00000-of-00001.parquet", rows)
    pairs = build_recipe("professionalism", source=tmp_path / "civil")
    _check_schema(pairs, "professionalism", "civil_comments")
    assert {p.positive for p in pairs} == {t for t, tox in CIVIL_ROWS if tox == 0.0}
    assert {p.negative for p in pairs} == {t for t, tox in CIVIL_ROWS if tox >= 0.5}
    kaggle = [
        {"id": n, "target": tox, "comment_text": t, "severe_toxicity": 0.0} for n, (t, tox) in enumerate(CIVIL_ROWS)
    ]
    _csv(tmp_path / "kaggle" / "train.csv", kaggle)
    assert build_recipe("professionalism", source=tmp_path / "kaggle") == pairs


# --- Measuring Hate Speech -------------------------------------------------------------


def test_inclusivity_uses_each_comment_once(tmp_path: Path) -> None:
    comments = [
        (1, "Everyone is welcome here, whatever their background, faith or language.", -2.5),
        (2, "Immigrants built this city and they deserve the same respect as anyone.", -1.4),
        (3, "People like them do not belong here and should all be thrown out.", 1.2),
        (4, "That whole group is a disease on this country and always has been.", 2.0),
        (5, "The bus was late again this morning and I missed the first lesson.", 0.0),
    ]
    rows = [
        {"comment_id": cid, "annotator_id": annotator, "text": text, "hate_speech_score": score, "sentiment": 2.0}
        for cid, text, score in comments
        for annotator in (10, 11, 12)
    ]
    _parquet(tmp_path / "mhs" / "measuring-hate-speech.parquet", rows)
    pairs = build_recipe("inclusivity", source=tmp_path / "mhs")
    _check_schema(pairs, "inclusivity", "measuring_hate_speech")
    assert len(pairs) == 2
    assert {p.positive for p in pairs} == {c[1] for c in comments[:2]}


# --- Empathetic Dialogues --------------------------------------------------------------


def test_register_pairs_written_prompt_with_first_chat_turn(tmp_path: Path) -> None:
    header = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
    prompt1 = (
        "I remember going to the fireworks with my best friend. "
        "There was a lot of people_comma_ but it only felt like us in the world."
    )
    prompt2 = "My landlord finally agreed to fix the heating after three weeks of cold nights in the apartment."
    turn1 = "I remember going to see the fireworks with my best friend. It felt like we were alone_comma_ honestly."
    turn2 = "Was this a friend you were in love with_comma_ or just a best friend?"
    turn3 = "Guess what! The heating is getting fixed at last_comma_ so no more freezing nights for me."
    lines = [
        f"hit:0_conv:1,1,sentimental,{prompt1},1,{turn1},5|5|5_2|2|5,",
        f"hit:0_conv:1,2,sentimental,{prompt1},0,{turn2},5|5|5_2|2|5,",
        f"hit:1_conv:2,1,grateful,{prompt2},3,{turn3},,",
    ]
    path = tmp_path / "empatheticdialogues" / "train.csv"
    path.parent.mkdir()
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    pairs = build_recipe("register", source=tmp_path / "empatheticdialogues")
    _check_schema(pairs, "register", "empathetic_dialogues")
    by_written = {p.positive: p.negative for p in pairs}
    assert by_written[prompt1.replace("_comma_", ",")] == (
        "I remember going to see the fireworks with my best friend. It felt like we were alone, honestly."
    )
    assert len(pairs) == 2 and all("_comma_" not in p.positive + p.negative for p in pairs)


# --- finding the data ------------------------------------------------------------------

PARADETOX_ROWS = [
    {
        "en_toxic_comment": "shut up you idiot , nobody asked for your opinion",
        "en_neutral_comment": "please be quiet , nobody asked for your opinion",
    },
    {
        "en_toxic_comment": "he is a damn liar and everyone here knows it",
        "en_neutral_comment": "he is a liar and everyone here knows it",
    },
]


def test_datasets_arrow_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    path = cache / "dair-ai___emotion" / "split" / "0.0.0" / "abc123" / "emotion-train.arrow"
    path.parent.mkdir(parents=True)
    table = pa.Table.from_pylist([{"text": text, "label": EMOTION_IDS[label]} for text, label in EMOTION_ROWS])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert len(build_recipe("enthusiasm")) == 2


def test_hub_cache_and_data_dir_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--s-nlp--paradetox" / "snapshots" / "0123abcd"
    _tsv(snapshot / "train.tsv", PARADETOX_ROWS)
    assert len(build_recipe("formality")) == 2
    monkeypatch.setenv("STF_DATASETS_DIR", str(tmp_path / "datasets"))
    _tsv(tmp_path / "datasets" / "paradetox" / "train.tsv", PARADETOX_ROWS[:1])
    assert len(build_recipe("formality")) == 1  # $STF_DATASETS_DIR comes first


def test_caches_under_an_older_dataset_id_are_found(tmp_path: Path) -> None:
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--imdb" / "snapshots" / "feedbeef"
    _parquet(snapshot / "plain_text" / "test-00000-of-00001.parquet", IMDB_ROWS)
    assert len(build_recipe("optimism")) == 3


def test_missing_source_says_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        build_recipe("optimism")
    message = str(caught.value)
    assert "dataset 'imdb' (stanfordnlp/imdb) was not found locally" in message
    assert "STF_DATASETS_DIR is not set" in message
    assert str(tmp_path / "hf_home" / "hub" / "datasets--stanfordnlp--imdb") in message
    assert str(tmp_path / "hf_home" / "datasets" / "stanfordnlp___imdb") in message
    assert "Provide it with source= (a file" in message and "aclImdb" in message

    with pytest.raises(SourceNotFoundError, match=r"nowhere \(does not exist\)"):
        build_recipe("optimism", source=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match=r"empty \(no matching files\)"):
        build_recipe("optimism", source=tmp_path / "empty")


def test_wrong_columns_are_named(tmp_path: Path) -> None:
    _parquet(tmp_path / "bad.parquet", [{"review_body": "Great film, loved every minute of it.", "stars": 5}])
    with pytest.raises(
        SourceFormatError,
        match=r"imdb needs a column named 'text' or 'review'; this file has \['review_body', 'stars'\]",
    ):
        build_recipe("optimism", source=tmp_path / "bad.parquet")


def test_every_recipe_names_a_paper_trait_and_layouts() -> None:
    from stf_jax.data import TRAITS

    for name, recipe in RECIPES.items():
        assert name == recipe.trait and name in TRAITS
        assert recipe.dataset.layouts and recipe.summary
    with pytest.raises(ValueError, match="unknown recipe 'sarcasm'"):
        build_recipe("sarcasm")


def test_cli_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tsv(tmp_path / "paradetox" / "train.tsv", PARADETOX_ROWS)
    out = tmp_path / "formality.jsonl"
    assert (
        main(["build", "formality", "--source", str(tmp_path / "paradetox"), "--out", str(out), "--max-pairs", "1"])
        == 0
    )
    assert "wrote 1 formality pairs from paradetox" in capsys.readouterr().out
    (pair,) = load_pairs(out)
    assert pair.source == "recipe:paradetox"
    assert main(["build", "register", "--out", str(tmp_path / "r.jsonl")]) == 2  # a missing source is an expected error: exit 2
    assert "dataset 'empathetic_dialogues'" in capsys.readouterr().err
