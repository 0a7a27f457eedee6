"""Fuzzing the readers of user files: pair files (JSONL, CSV, Parquet), corpora and control vectors.

Random bytes and malformed records must give either a correct result or a UserError (one line, exit 2):
never another exception (a traceback) and never a silent success with wrong content."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stf_jax.data import ContrastPair, load_pairs  # noqa: E402
from stf_jax.data.pairs import REQUIRED_FIELDS  # noqa: E402
from stf_jax.errors import UserError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

text = st.text(st.characters(codec="utf-8"), max_size=12)
value = st.one_of(text, st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.booleans(),
                  st.lists(st.integers(), max_size=2), st.dictionaries(text, st.integers(), max_size=1))
field = st.sampled_from(list(REQUIRED_FIELDS) + ["prompt", "source", "split", "x"])
record = st.dictionaries(field, value, max_size=8)


def _check(pairs, path):
    """A success must be real pairs, each with every required field a non-empty string."""
    assert isinstance(pairs, list)
    for p in pairs:
        assert isinstance(p, ContrastPair)
        for f in REQUIRED_FIELDS:
            assert isinstance(getattr(p, f), str) and getattr(p, f).strip(), (path, p)
        json.dumps(p.to_dict(), ensure_ascii=False).encode("utf-8")  # usable downstream (hashing, saving)
    assert len({p.id for p in pairs}) == len(pairs)


def _load(path):
    try:
        pairs = load_pairs(path)
    except UserError:
        return None
    _check(pairs, path)
    return pairs


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
def test_random_bytes_in_pair_files(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("f") / f"p{suffix}"
    path.write_bytes(data)
    _load(path)


@FUZZ
@given(records=st.lists(st.one_of(record, value), max_size=5), junk=st.lists(st.binary(max_size=20), max_size=2))
def test_malformed_jsonl_records(tmp_path_factory, records, junk):
    lines = [json.dumps(r).encode() for r in records] + list(junk)
    path = tmp_path_factory.mktemp("f") / "p.jsonl"
    path.write_bytes(b"\n".join(lines))
    _load(path)


@FUZZ
@given(header=st.lists(field, max_size=6), rows=st.lists(st.lists(text, max_size=7), max_size=4))
def test_malformed_csv(tmp_path_factory, header, rows):
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    path = tmp_path_factory.mktemp("f") / "p.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    _load(path)


@FUZZ
@given(records=st.lists(st.dictionaries(field, st.one_of(text, st.none(), st.integers(-3, 3)), max_size=7),
                        min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 2000)))
def test_malformed_and_truncated_parquet(tmp_path_factory, records, cut):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowException, ValueError, TypeError):
        return  # not representable as a table: nothing to write
    path = tmp_path_factory.mktemp("f") / "p.parquet"
    pq.write_table(table, path)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    _load(path)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".jsonl"]))
def test_random_bytes_in_corpora(tmp_path_factory, data, suffix):
    from stf_jax.extract.inputs import read_corpus

    path = tmp_path_factory.mktemp("f") / f"c{suffix}"
    path.write_bytes(data)
    try:
        texts, skipped = read_corpus(path)
    except UserError:
        return
    assert all(isinstance(t, str) and t.strip() for t in texts)


def _valid_control_vector(tmp_path, fmt: str):
    from stf_jax.core.vectorfile import write_vector_file as export_control_vector

    path = tmp_path / f"cv.{fmt}"
    rng = np.random.default_rng(0)
    export_control_vector(path, {3: rng.normal(size=8).astype(np.float32), 5: rng.normal(size=8).astype(np.float32)},
                          model_hint="llama", metadata={"trait": "formality"})
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.generate])  # no shrinking: a failure is reported at once, not after minutes
@given(data=st.data(), fmt=st.sampled_from(["gguf", "safetensors"]))
def test_damaged_and_random_control_vectors(tmp_path_factory, data, fmt):
    """Random bytes, and a valid file truncated or with bytes flipped: a correct ControlVector or an
    expected error, never another exception."""
    from stf_jax.core.vectorfile import read_control_vector as load_control_vector

    tmp = tmp_path_factory.mktemp("cv")
    valid = _valid_control_vector(tmp, fmt)
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=300))
    elif kind == "truncated":
        blob = valid[:data.draw(st.integers(0, len(valid) - 1))]
    else:
        blob = bytearray(valid)
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    path = tmp / f"x.{fmt}"
    path.write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cv = load_control_vector(path)
        except UserError:
            return
    for layer, v in cv.directions.items():
        assert isinstance(layer, int) and v.ndim == 1 and v.dtype == np.float32
