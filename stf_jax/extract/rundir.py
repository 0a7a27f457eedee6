"""Inputs to alignment: steering vectors from extraction run directories, checked, and the trial splits.

A model's vectors may come from any run directory; rows are matched by pair id (same ids on both sides,
the same trait for each id), so two runs extracted separately still pair row for row. Splits are
`stf_jax.data.split_pairs` (trait-stratified, text-disjoint) with seeds seed, seed+1, …, identical for
every model; they need the pair texts, taken from the dataset the run names (or `pairs` given).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..data import ContrastPair, dataset_hash, load_pairs, split_pairs
from ..core.layers import LayerSpecError, resolve_layer
from .store import load_layer, load_run_pairs, read_manifest

SCRAMBLES = ("proper", "within_trait", "cross_trait")


class AlignInputError(UserError, ValueError):
    """The inputs cannot be aligned as given (mismatched stores, bad values, impossible k)."""


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where one model's vectors live: run directory + the manifest's model entry."""

    run_dir: Path
    name: str
    slug: str
    d_model: int
    n_layers: int
    layers: tuple[int, ...]

    def resolve_layer(self, layer: int | float | str) -> int:
        """HF index of one layer (a spec as in extraction: -6, 0.67, ...); it must have been extracted."""
        try:
            idx = resolve_layer(layer, self.n_layers, self.name)
        except LayerSpecError as exc:
            raise AlignInputError(str(exc)) from None
        if idx not in self.layers:
            raise AlignInputError(f"layer {layer} (= {idx}) was not extracted for {self.name} in {self.run_dir}; "
                                  f"extracted: {list(self.layers)}")
        return idx


@dataclasses.dataclass(frozen=True)
class PairTable:
    """The rows every model shares: pair ids, traits, and the pairs themselves (texts, for splitting)."""

    pair_ids: tuple[str, ...]
    traits: tuple[str, ...]
    pairs: tuple[ContrastPair, ...]
    trait_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.pair_ids)

    def onehot(self) -> np.ndarray:
        """[n, C] trait indicator, columns in trait_names order."""
        index = {t: i for i, t in enumerate(self.trait_names)}
        out = np.zeros((self.n, len(self.trait_names)), np.float32)
        out[np.arange(self.n), [index[t] for t in self.traits]] = 1.0
        return out


def find_models(run_dirs: Sequence[str | Path], kind: str = "pairs") -> dict[str, ModelRef]:
    """name -> ModelRef over all run directories of one `kind` ("pairs" or "corpus"; a name in two runs
    is ambiguous: error)."""
    found: dict[str, ModelRef] = {}
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir)
        if manifest.get("kind", "pairs") != kind:
            raise AlignInputError(f"{run_dir} is a {manifest.get('kind')!r} run; alignment needs a pairs run"
                                  if kind == "pairs" else f"{run_dir} is a {manifest.get('kind')!r} run, not a {kind} run")
        for e in manifest["models"]:
            ref = ModelRef(Path(run_dir), e["name"], e["slug"], int(e["d_model"]), int(e["n_layers"]),
                           tuple(int(x) for x in e["layers"]))
            if e["name"] in found:
                raise AlignInputError(f"model {e['name']!r} is in both {found[e['name']].run_dir} and {run_dir}")
            found[e["name"]] = ref
    if not found:
        raise AlignInputError("no models in the given run directories")
    return found


def model_pair(run_dir: str | Path, source: str, target: str, kind: str = "pairs",
               hint: str = "") -> tuple[ModelRef, ModelRef]:
    """(source ref, target ref) of one run, each required to be in it (`hint` ends the error)."""
    refs = find_models([run_dir], kind)
    for name in (source, target):
        if name not in refs:
            raise AlignInputError(f"model {name!r} is not in {run_dir}; it holds {sorted(refs)}{hint}")
    return refs[source], refs[target]


def _run_rows(run_dir: Path) -> tuple[list[str], list[str], dict]:
    m = read_manifest(run_dir)
    return list(m["pair_ids"]), list(m["traits"]), m


def pair_table(refs: Sequence[ModelRef], pairs: Sequence[ContrastPair] | str | None = None) -> tuple[PairTable, dict[Path, np.ndarray]]:
    """Check that every model's run has the same pairs and traits; return the shared table (rows in the
    first run's order) and, per run directory, the row order that maps it onto the table.

    `pairs`: the dataset (or a load_pairs name/path) with the texts; default: the dataset the run names."""
    runs = sorted({r.run_dir for r in refs}, key=lambda p: [r.run_dir for r in refs].index(p))
    ids0, traits0, manifest0 = _run_rows(runs[0])
    if len(set(ids0)) != len(ids0):
        raise AlignInputError(f"{runs[0]}: duplicate pair ids")
    order: dict[Path, np.ndarray] = {runs[0]: np.arange(len(ids0))}
    for run in runs[1:]:
        ids, traits, _ = _run_rows(run)
        missing = sorted(set(traits0) ^ set(traits))
        if missing:
            only0 = sorted(set(traits0) - set(traits))
            only1 = sorted(set(traits) - set(traits0))
            raise AlignInputError(f"trait(s) missing on one side: only in {runs[0]}: {only0}; only in {run}: {only1}")
        if set(ids) != set(ids0) or len(ids) != len(ids0):
            a, b = sorted(set(ids0) - set(ids)), sorted(set(ids) - set(ids0))
            raise AlignInputError(f"pair_ids differ between {runs[0]} ({len(ids0)} pairs) and {run} ({len(ids)}): "
                                  f"{len(a)} only in the first (e.g. {a[:3]}), {len(b)} only in the second "
                                  f"(e.g. {b[:3]}); extract both models from the same pairs")
        pos = {pid: i for i, pid in enumerate(ids)}
        order[run] = np.array([pos[pid] for pid in ids0])
        bad = [pid for pid, t in zip(ids0, traits0) if traits[pos[pid]] != t]
        if bad:
            raise AlignInputError(f"{len(bad)} pair id(s) have different traits in {runs[0]} and {run}, e.g. {bad[:3]}")

    check_same_texts(runs)
    # the dataset record: {"source": {"dataset", "hash"}} (current) or {"dataset": {"name", "hash"}} (earlier runs)
    record = manifest0.get("source") or {}
    legacy = manifest0.get("dataset") if isinstance(manifest0.get("dataset"), dict) else {}
    source = {"dataset": record.get("dataset") or legacy.get("name"), "hash": record.get("hash") or legacy.get("hash")}
    if pairs is None:
        pairs = load_run_pairs(runs[0], manifest0)  # a run keeps its texts (RUN/pairs.jsonl), from any cwd
    if pairs is None or isinstance(pairs, (str, Path)):
        name = pairs or source["dataset"]
        if not name:
            raise AlignInputError(f"{runs[0]} does not name its dataset; pass the pairs (texts are needed to split)")
        try:
            pairs = load_pairs(name)
        except (FileNotFoundError, ValueError) as e:
            raise AlignInputError(f"cannot load the pair texts from {name!r} ({e}); pass the dataset explicitly "
                                  "(pairs=), or re-extract the run (runs now keep a copy of their pair texts)") from None
    by_id = {p.id: p for p in pairs}
    absent = [pid for pid in ids0 if pid not in by_id]
    if absent:
        raise AlignInputError(f"{len(absent)} pair id(s) of the run are not in the dataset given, e.g. {absent[:3]}")
    chosen = [by_id[pid] for pid in ids0]
    if source.get("hash") and dataset_hash(chosen) != source["hash"]:
        raise AlignInputError(f"the texts of the dataset given differ from the ones {runs[0]} was extracted from (hash "
                              "mismatch); pass the pairs file the run was extracted from, or leave pairs= out")
    wrong = [p.id for p, t in zip(chosen, traits0) if p.trait != t]
    if wrong:
        raise AlignInputError(f"{len(wrong)} pair(s) have another trait in the dataset than in the run, e.g. {wrong[:3]}")
    return PairTable(tuple(ids0), tuple(traits0), tuple(chosen), tuple(sorted(set(traits0)))), order


def check_same_texts(run_dirs: Sequence[str | Path]) -> None:
    """Refuse runs that are to be combined but were extracted from different texts (the same pair ids are
    not enough: a file with swapped or edited texts under the same ids gives plausible, wrong numbers).

    Runs that keep their pair texts (RUN/pairs.jsonl) are compared pair by pair and the differing ids are
    named; older runs are compared by the dataset hash of their manifest."""
    runs = list(dict.fromkeys(Path(r) for r in run_dirs))
    if len(runs) < 2:
        return
    manifests = [read_manifest(r) for r in runs]
    hashes = [(m.get("source") or {}).get("hash") for m in manifests]
    texts = [load_run_pairs(r, m) for r, m in zip(runs, manifests)]
    for run, m, h, t in zip(runs[1:], manifests[1:], hashes[1:], texts[1:]):
        if texts[0] is not None and t is not None:
            theirs = {p.id: p for p in t}
            differ = [p.id for p in texts[0] if p.id in theirs and
                      (p.positive, p.negative, p.prompt, p.trait) != (theirs[p.id].positive, theirs[p.id].negative,
                                                                      theirs[p.id].prompt, theirs[p.id].trait)]
            if differ:
                raise AlignInputError(
                    f"{runs[0]} and {run} were extracted from different texts under the same pair ids: {len(differ)} "
                    f"pair(s) differ, e.g. {differ[:3]}; extract every model from the same pairs file")
        if hashes[0] and h and hashes[0] != h and set(manifests[0].get("pair_ids", [])) == set(m.get("pair_ids", [])):
            raise AlignInputError(
                f"{runs[0]} and {run} were extracted from different texts under the same pair ids (dataset hash "
                f"{hashes[0][:12]}… vs {h[:12]}…); extract every model from the same pairs file")


def load_vectors(ref: ModelRef, layer: int, row_order: np.ndarray, array: str = "vectors") -> np.ndarray:
    """[n, d_model] float32 rows of one model at one layer, in table order; NaN/Inf is an error."""
    idx = ref.resolve_layer(layer)
    tensors = load_layer(ref.run_dir, ref.name, idx)
    if array not in tensors:
        raise AlignInputError(f"{ref.run_dir}: no array {array!r} (has {sorted(tensors)})")
    x = np.asarray(tensors[array], np.float32)[row_order]
    check_finite(x, f"{ref.name} layer {idx} {array!r}")
    return x


def zero_rows(x: np.ndarray) -> np.ndarray:
    """[n] bool: rows with no direction (identical pooled states, e.g. the same last token at layer 0)."""
    return np.linalg.norm(x, axis=-1) < 1e-6


def check_finite(x: np.ndarray, what: str, ids: Sequence[str] | None = None) -> None:
    bad = ~np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
    if bad.any():
        rows = np.nonzero(bad)[0]
        named = [ids[i] for i in rows[:3]] if ids is not None else rows[:3].tolist()
        raise AlignInputError(f"{what}: {len(rows)} row(s) contain NaN or Inf (e.g. rows {named})")


def array_hash(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def manifest_hash(run_dir: Path) -> str:
    return hashlib.sha256((Path(run_dir) / "manifest.json").read_bytes()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Trials:
    """Row weights and pairings for T trials (split seeds seed, seed+1, …).

    Attributes:
      train, test, val: [T, n] float32 0/1; val ⊂ train (for early stopping), fit = train − val.
      perms: [T, 3, n] int32 source row paired with each target row under SCRAMBLES (test rows fixed).
      seeds: the split seed of each trial.
    """

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray
    perms: np.ndarray
    seeds: tuple[int, ...]

    @property
    def fit(self) -> np.ndarray:
        return self.train - self.val

    @property
    def n_train_min(self) -> int:
        return int(self.train.sum(1).min())


def make_trials(table: PairTable, trials: int = 5, seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.1, exclude: np.ndarray | None = None) -> Trials:
    """Text-disjoint, trait-stratified splits; a text-disjoint validation slice of each train side; and the
    scrambled pairings of the train rows (within each trait, and across all traits).

    `exclude` [n] bool drops rows from every side after splitting (the splits themselves do not change),
    e.g. pairs whose steering vector is zero in some model."""
    if trials < 1:
        raise AlignInputError(f"trials must be >= 1, got {trials}")
    n = table.n
    row = {pid: i for i, pid in enumerate(table.pair_ids)}
    traits = np.array(table.traits)
    train = np.zeros((trials, n), np.float32)
    test = np.zeros((trials, n), np.float32)
    val = np.zeros((trials, n), np.float32)
    perms = np.tile(np.arange(n, dtype=np.int32), (trials, len(SCRAMBLES), 1))
    seeds = tuple(seed + t for t in range(trials))
    for t, s in enumerate(seeds):
        split = split_pairs(table.pairs, test_fraction=test_fraction, seed=s)
        train[t, [row[i] for i in split.train]] = 1.0
        test[t, [row[i] for i in split.test]] = 1.0
        train_pairs = [table.pairs[row[i]] for i in split.train]
        inner = split_pairs(train_pairs, test_fraction=val_fraction, seed=s + 10_000)
        val[t, [row[i] for i in inner.test]] = 1.0
        if exclude is not None:
            for side in (train, test, val):
                side[t, exclude] = 0.0
        rng = np.random.default_rng([s, 1])
        tr = np.nonzero(train[t])[0]
        for trait in table.trait_names:
            rows = tr[traits[tr] == trait]
            perms[t, 1, rows] = rng.permutation(rows)
        perms[t, 2, tr] = rng.permutation(tr)
    if (train.sum(1) < 2).any() or (test.sum(1) < 1).any():
        raise AlignInputError(f"too few pairs to split ({n} pairs): need >= 2 training and >= 1 test pair")
    return Trials(train, test, val, perms, seeds)


def check_k(k: int, n_train: int, widths: dict[str, int]) -> None:
    """k must fit the training set (rank ≤ n_train − 1 after centering) and every model's width."""
    limit = min(n_train - 1, *widths.values())
    if not 1 <= k <= limit:
        named = ", ".join(f"d({m}) = {d}" for m, d in widths.items())
        raise AlignInputError(f"k={k} is larger than the training set or a dimension allows: max k = "
                              f"min(n_train - 1 = {n_train - 1}, {named}) = {limit}")


def describe_inputs(refs: Sequence[ModelRef]) -> dict:
    """Run directories and manifest hashes, for results.json."""
    runs = {str(r.run_dir): manifest_hash(r.run_dir) for r in refs}
    return {"runs": runs, "models": {r.name: {"run": str(r.run_dir), "d_model": r.d_model, "n_layers": r.n_layers}
                                     for r in refs}}
