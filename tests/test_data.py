"""Contrast-pair loading, validation, near-duplicate search, splitting and the data CLI."""

from __future__ import annotations

import csv
import itertools
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stf_jax.data import (
    TRAITS,
    ContrastPair,
    PairFormatError,
    dataset_hash,
    load_pairs,
    normalize_text,
    pair_stats,
    save_pairs,
    split_pairs,
    validate_pairs,
)
from stf_jax.data.__main__ import main
from stf_jax.data.near_duplicates import find_near_duplicates
from stf_jax.data.pairs import SHIPPED_DIR
from stf_jax.data.split import Split


def _vocabulary(size: int = 4000) -> list[str]:
    rng = random.Random(0)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(size)]


_VOCABULARY = _vocabulary()


def _text(rng: random.Random, words: int = 20) -> str:
    """A random sentence over a 4,000-word vocabulary: unrelated texts share almost no 5-grams."""
    return " ".join(rng.choice(_VOCABULARY) for _ in range(words)).capitalize() + "."


def _pairs(traits: dict[str, int], seed: int = 0) -> list[ContrastPair]:
    """Synthetic pairs, ``traits[name]`` of each, all texts distinct and unrelated."""
    rng = random.Random(seed)
    return [
        ContrastPair(id=f"{trait}-{n:04d}", trait=trait, positive=_text(rng), negative=_text(rng), prompt="Say it.")
        for trait, count in traits.items()
        for n in range(count)
    ]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def _record(
    pair_id: str, trait: str = "formality", positive: str = "Good day to you.", negative: str = "hey u"
) -> dict:
    return {"id": pair_id, "trait": trait, "positive": positive, "negative": negative}


def _one_word_changed(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = rng.choice(_VOCABULARY)
    return " ".join(words)


# --- loading ---------------------------------------------------------------------------


def test_jsonl_round_trip_sorts_by_trait_then_id(tmp_path: Path) -> None:
    pairs = _pairs({"verbosity": 3, "formality": 3})
    pinned = ContrastPair(id="a-pinned", trait="humor", positive="Ha, ha, ha!", negative="It is funny.", split="test")
    save_pairs(list(reversed(pairs)) + [pinned], tmp_path / "pairs.jsonl")
    loaded = load_pairs(tmp_path / "pairs.jsonl")
    assert loaded == sorted(pairs + [pinned], key=lambda p: (p.trait, p.id))
    assert [p.split for p in loaded if p.trait == "humor"] == ["test"]


def test_optional_fields_default_to_empty(tmp_path: Path) -> None:
    (pair,) = load_pairs(_write_jsonl(tmp_path / "p.jsonl", [_record("x1")]))
    assert (pair.prompt, pair.source, pair.split) == ("", "", None)


def test_csv_loads_quoted_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "trait", "prompt", "positive", "negative", "source"])
        writer.writerow(["c1", "politeness", "", "Could you, please,\nhelp me?", "Help me.", "handwritten"])
        writer.writerow(["c2", "politeness", "Ask for help.", "Would you mind helping?", "Help.", ""])
    first, second = load_pairs(path)
    assert first == ContrastPair("c1", "politeness", "Could you, please,\nhelp me?", "Help me.", source="handwritten")
    assert second.prompt == "Ask for help." and second.source == ""


def test_parquet_loads(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pairs = _pairs({"urgency": 4})
    pq.write_table(pa.Table.from_pylist([p.to_dict() for p in pairs]), tmp_path / "pairs.parquet")
    assert load_pairs(tmp_path / "pairs.parquet") == pairs


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pairs\.parquet needs pyarrow: pip install pyarrow"):
        load_pairs(path)


def test_directory_reads_every_pair_file_and_ignores_others(tmp_path: Path) -> None:
    pairs = _pairs({"humor": 2, "empathy": 2})
    save_pairs(pairs[:2], tmp_path / "humor.jsonl")
    with open(tmp_path / "empathy.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "trait", "prompt", "positive", "negative", "source"])
        writer.writeheader()
        writer.writerows(p.to_dict() for p in pairs[2:])
    (tmp_path / "README.md").write_text("# not data\n")
    assert load_pairs(tmp_path) == sorted(pairs, key=lambda p: (p.trait, p.id))


def test_traits_filter_and_unknown_trait(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    save_pairs(_pairs({"humor": 2, "empathy": 3, "urgency": 1}), path)
    assert Counter(p.trait for p in load_pairs(path, traits=["empathy", "urgency"])) == {"empathy": 3, "urgency": 1}
    with pytest.raises(ValueError, match=r"unknown trait.*'sarcasm'.*available: empathy, humor, urgency"):
        load_pairs(path, traits=["sarcasm"])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(_record("a")), json.dumps(_record("b")), '{"id": "c", "trait": '], r":3: malformed JSON"),
        (
            [json.dumps(_record("a")), json.dumps({"id": "b", "trait": "humor", "positive": "Ha."})],
            r":2: missing field\(s\) \['negative'\]",
        ),
        ([json.dumps(_record("a", positive="   "))], r":1: field 'positive' is empty"),
        (
            [json.dumps(_record("a")), "", json.dumps(_record("a", positive="Other text."))],
            r":3: duplicate id 'a' \(first at .*p\.jsonl:1\)",
        ),
        ([json.dumps({**_record("a"), "id": 7})], r":1: field 'id' must be a string"),
        ([json.dumps({**_record("a"), "split": "dev"})], r":1: split must be one of"),
        (["[1, 2]"], r":1: expected a JSON object"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PairFormatError, match=str(path).replace(".", r"\.") + message):
        load_pairs(path)


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "id,trait,positive,negative\nx1,humor,Ha ha.,It is funny.\nx2,humor,,It is dull.\n", encoding="utf-8"
    )
    with pytest.raises(PairFormatError, match=r"p\.csv:3: missing field\(s\) \['positive'\]"):
        load_pairs(path)
    path.write_text("id,trait,positive\nx1,humor,Ha ha.\n", encoding="utf-8")
    with pytest.raises(PairFormatError, match=r"p\.csv:1: header lacks column\(s\) \['negative'\]"):
        load_pairs(path)


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "a.jsonl", [_record("same")])
    _write_jsonl(tmp_path / "b.jsonl", [_record("same", positive="Greetings.")])
    with pytest.raises(PairFormatError, match=r"b\.jsonl:1: duplicate id 'same' \(first at .*a\.jsonl:1\)"):
        load_pairs(tmp_path)


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a dataset name"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        load_pairs(tmp_path / "pairs.txt")


# --- shipped set -----------------------------------------------------------------------

def test_shipped_set_validates() -> None:
    pairs = load_pairs("shipped")
    assert load_pairs("stf-26") == pairs
    report = validate_pairs(pairs, expected_traits=TRAITS)
    assert report.ok, report.render()
    counts = Counter(pair.trait for pair in pairs)
    assert set(counts) == set(TRAITS) and min(counts.values()) >= 100
    for trait in TRAITS:
        assert {pair.trait for pair in load_pairs(SHIPPED_DIR / f"{trait}.jsonl")} == {trait}


# --- validation ------------------------------------------------------------------------


def test_clean_dataset_passes() -> None:
    report = validate_pairs(
        _pairs({"humor": 5, "verbosity": 5}), min_per_trait=5, expected_traits=["humor", "verbosity"]
    )
    assert report.ok, report.render()
    assert report.errors == () and report.near_duplicates == ()
    assert report.render().startswith("OK: 10 pairs, 2 traits")


def test_duplicate_ids_and_texts_are_errors() -> None:
    pairs = _pairs({"humor": 4})
    pairs[1] = ContrastPair(pairs[0].id, "humor", pairs[1].positive, pairs[1].negative)
    pairs[3] = ContrastPair(pairs[3].id, "humor", pairs[3].positive, pairs[2].positive.upper())
    report = validate_pairs(pairs, min_per_trait=1)
    assert not report.ok
    assert f"duplicate id {pairs[0].id!r} (2 pairs)" in report.errors
    assert f"duplicate text in {pairs[2].id}:positive, {pairs[3].id}:negative" in report.errors
    assert report.near_duplicates == ()  # exact copies are reported once, as duplicates


def test_empty_and_identical_sides_are_errors() -> None:
    pairs = _pairs({"humor": 2})
    pairs[0] = ContrastPair(pairs[0].id, "humor", "  ", pairs[0].negative)
    pairs[1] = ContrastPair(pairs[1].id, "humor", "Same  words here.", "same words HERE.")
    report = validate_pairs(pairs, min_per_trait=1)
    assert f"{pairs[0].id}: empty positive" in report.errors
    assert f"{pairs[1].id}: positive and negative are identical" in report.errors


def test_near_duplicates_across_pairs_and_traits_are_errors() -> None:
    rng = random.Random(1)
    pairs = _pairs({"humor": 3, "urgency": 3})
    copy = _one_word_changed(pairs[0].positive, rng)
    pairs[4] = ContrastPair(pairs[4].id, "urgency", pairs[4].positive, copy)
    report = validate_pairs(pairs, min_per_trait=1)
    (near,) = report.near_duplicates
    assert (near.first, near.second) == (f"{pairs[0].id}:positive", f"{pairs[4].id}:negative")
    assert 0.6 <= near.jaccard < 1.0
    assert any(error.startswith("near-duplicate texts") for error in report.errors)
    assert validate_pairs(pairs, min_per_trait=1, threshold=0.99).ok


def test_a_pairs_own_sides_may_be_similar() -> None:
    rng = random.Random(2)
    pairs = _pairs({"formality": 3})
    pairs[1] = ContrastPair(pairs[1].id, "formality", pairs[1].positive, _one_word_changed(pairs[1].positive, rng))
    assert validate_pairs(pairs, min_per_trait=1).ok


def test_counts_and_expected_traits() -> None:
    report = validate_pairs(
        _pairs({"humor": 3, "empathy": 5}), min_per_trait=4, expected_traits=["humor", "empathy", "urgency"]
    )
    assert "trait 'humor' has 3 pairs, fewer than 4" in report.errors
    assert "missing trait(s): urgency" in report.errors
    assert not any("empathy" in error for error in report.errors)


def test_length_ratio_and_unknown_trait_are_warnings() -> None:
    long = " ".join(["word"] * 30)
    pairs = [
        ContrastPair("h1", "humor", "A short joke here.", f"A {long} reply."),
        ContrastPair("v1", "verbosity", f"A {long} answer.", "Short answer here."),
        ContrastPair("s1", "sarcasm", "Oh, great, another meeting.", "Another meeting is scheduled."),
    ]
    report = validate_pairs(pairs, min_per_trait=1)
    assert report.ok
    assert report.warnings == (
        "trait 'sarcasm' is not one of the 26 paper traits",
        "h1: sides differ in length by more than 2x (4 vs 32 words)",
    )


def test_report_lists_stats_and_truncates_items() -> None:
    pairs = _pairs({"humor": 3})
    report = validate_pairs(pairs, min_per_trait=1, expected_traits=["a", "b", "c"])
    text = report.render(max_items=1)
    assert text.startswith("FAILED: 3 pairs") and "humor" in text
    stats = pair_stats(pairs)["humor"]
    assert (stats.count, stats.positive.min, stats.positive.max) == (3, 20, 20)


def test_near_duplicate_search_matches_brute_force() -> None:
    rng = random.Random(3)
    texts: list[str] = []
    for _ in range(200):
        texts.append(normalize_text(_text(rng, rng.randint(1, 30))))
        for _ in range(rng.randint(0, 2)):
            texts.append(normalize_text(_one_word_changed(texts[-1], rng)))
    texts += ["abc", "abcd", "abc", ""]
    owners = [index // 3 for index in range(len(texts))]

    def grams(text: str) -> set[str]:
        return {text[i : i + 5] for i in range(len(text) - 4)} if len(text) > 5 else {text}

    sets = [grams(text) for text in texts]
    scores = {
        (i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        for i, j in itertools.combinations(range(len(texts)), 2)
        if owners[i] != owners[j] and texts[i] != texts[j] and sets[i] & sets[j]
    }
    for threshold in (0.5, 0.6, 0.8):
        expected = [(i, j) for (i, j), score in sorted(scores.items()) if score >= threshold]
        found = find_near_duplicates(texts, owners, threshold)
        assert [(i, j) for i, j, _ in found] == expected
        assert [score for _, _, score in found] == pytest.approx([scores[pair] for pair in expected])
    assert len(expected) > 20


def test_validation_is_fast_at_dataset_scale() -> None:
    pairs = _pairs({trait: 210 for trait in TRAITS})  # 5,460 pairs, 10,920 texts
    start = time.perf_counter()
    report = validate_pairs(pairs, expected_traits=TRAITS)
    assert report.ok, report.render()
    assert time.perf_counter() - start < 15.0


# --- splitting -------------------------------------------------------------------------


def _test_texts(pairs: list[ContrastPair], split: Split, side: str) -> set[str]:
    ids = set(getattr(split, side))
    return {normalize_text(t) for p in pairs if p.id in ids for t in (p.positive, p.negative)}


def test_split_is_deterministic_and_order_independent() -> None:
    pairs = _pairs({"humor": 40, "empathy": 60})
    first = split_pairs(pairs, seed=0)
    shuffled = list(pairs)
    random.Random(9).shuffle(shuffled)
    assert split_pairs(shuffled, seed=0) == first
    other = split_pairs(pairs, seed=1)
    assert set(other.test) != set(first.test)
    assert sorted(first.train + first.test) == sorted(p.id for p in pairs)
    assert first.dataset_hash == dataset_hash(pairs)


def test_split_is_stratified_by_trait() -> None:
    pairs = _pairs({"humor": 100, "empathy": 55, "urgency": 7})
    split = split_pairs(pairs, test_fraction=0.2, seed=4)
    test_counts = Counter(p.trait for p in pairs if p.id in set(split.test))
    assert test_counts == {"humor": 20, "empathy": 11, "urgency": 1}


def test_split_keeps_pairs_sharing_a_text_together() -> None:
    pairs = _pairs({"humor": 50})
    shared = pairs[0].positive
    # A chain: 0 -> 1 share a text, 1 -> 2 share another (different case and spacing).
    pairs[1] = ContrastPair(pairs[1].id, "humor", pairs[1].positive, "  " + shared.upper())
    pairs[2] = ContrastPair(pairs[2].id, "humor", pairs[1].positive.lower(), pairs[2].negative)
    chain = {pairs[0].id, pairs[1].id, pairs[2].id}
    sides_seen = set()
    for seed in range(20):
        split = split_pairs(pairs, seed=seed)
        assert chain <= set(split.train) or chain <= set(split.test)
        sides_seen.add("test" if chain <= set(split.test) else "train")
        assert not _test_texts(pairs, split, "train") & _test_texts(pairs, split, "test")
    assert sides_seen == {"train", "test"}


def test_pinned_pairs_stay_put() -> None:
    pairs = _pairs({"humor": 20})
    pairs[0] = ContrastPair(pairs[0].id, "humor", pairs[0].positive, pairs[0].negative, split="test")
    pairs[1] = ContrastPair(pairs[1].id, "humor", pairs[0].positive, pairs[1].negative)  # shares a text with 0
    pairs[2] = ContrastPair(pairs[2].id, "humor", pairs[2].positive, pairs[2].negative, split="train")
    for seed in range(5):
        split = split_pairs(pairs, seed=seed)
        assert {pairs[0].id, pairs[1].id} <= set(split.test) and pairs[2].id in split.train
        assert len(split.test) == 4
    pairs[3] = ContrastPair(pairs[3].id, "humor", pairs[0].negative, pairs[3].negative, split="train")
    with pytest.raises(ValueError, match="pinned to different splits"):
        split_pairs(pairs)


def test_split_rejects_duplicate_ids_and_partitions(tmp_path: Path) -> None:
    pairs = _pairs({"humor": 10})
    with pytest.raises(ValueError, match="duplicate pair id"):
        split_pairs(pairs + [pairs[0]])
    split = split_pairs(pairs, seed=3)
    train, test = split.partition(pairs)
    assert [p.id for p in test] == [p.id for p in pairs if p.id in split.test] and len(train) == 8
    split.save(tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["test"] == list(split.test) and saved["seed"] == 3
    with pytest.raises(ValueError, match="not in this split"):
        split.partition(_pairs({"urgency": 1}))


def test_dataset_hash_tracks_content_not_order_or_source() -> None:
    pairs = _pairs({"humor": 5})
    assert dataset_hash(list(reversed(pairs))) == dataset_hash(pairs)
    relabelled = [ContrastPair(p.id, p.trait, p.positive, p.negative, p.prompt, source="other") for p in pairs]
    assert dataset_hash(relabelled) == dataset_hash(pairs)
    edited = [ContrastPair(pairs[0].id, "humor", pairs[0].positive + "!", pairs[0].negative)] + pairs[1:]
    assert dataset_hash(edited) != dataset_hash(pairs)


# --- command line ----------------------------------------------------------------------


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    save_pairs(_pairs({"humor": 3}), good)
    assert main(["validate", str(good), "--min-per-trait", "3"]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 pairs")
    assert main(["validate", str(good)]) == 1
    assert "trait 'humor' has 3 pairs, fewer than 100" in capsys.readouterr().out
    bad = _write_jsonl(tmp_path / "bad.jsonl", [_record("a"), {"id": "b"}])
    assert main(["validate", str(bad)]) == 1
    assert "bad.jsonl:2: missing field(s)" in capsys.readouterr().err


def test_cli_split_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pairs.jsonl"
    save_pairs(_pairs({"humor": 10, "urgency": 5}), data)
    out = tmp_path / "split.json"
    assert main(["split", str(data), "--seed", "2", "--test-fraction", "0.2", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["test"] == list(split_pairs(load_pairs(data), test_fraction=0.2, seed=2).test)
    capsys.readouterr()
    assert main(["stats", str(data), "--traits", "urgency"]) == 0
    table = capsys.readouterr().out
    assert "urgency" in table and "humor" not in table and "mean" in table


def test_cli_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    flags = {
        "validate": ["--threshold", "--min-per-trait", "--traits", "NAME_OR_PATH"],
        "split": ["--seed", "--test-fraction", "--out"],
        "stats": ["--traits"],
        "build": ["--source", "--out", "--max-pairs", "verbosity"],
    }
    for command, expected in flags.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert all(flag in text for flag in expected), (command, text)


def test_a_side_is_read_with_its_prompt() -> None:
    """"(A)" answering two questions (chat-form A/B items) is two texts; a side without a prompt is the same
    text as under any prompt. The shipped A/B items split the same in every form."""
    from stf_jax.data import load_pairs

    pairs = [ContrastPair("a-1", "t", "(A)", "(B)", prompt="Q1?", split="train"),
             ContrastPair("a-2", "t", "(A)", "(B)", prompt="Q2?", split="test")]
    assert split_pairs(pairs).test == ("a-2",)
    with pytest.raises(ValueError, match="share a text"):
        split_pairs(pairs + [ContrastPair("a-3", "t", "(A)", "(C)", split="test")])
    ids = {form: split_pairs(load_pairs(form)).test for form in ("ab", "ab-whole", "ab-chat", "ab-chat-whole")}
    assert len(set(ids.values())) == 1 and len(ids["ab"]) == 96
