"""Map training data from several sources, mixed by weight, and affine maps fitted from their moments.

A map carries what it was fitted on. Fitted on 26 style traits of short texts, it carries an unseen style
well and an A/B behaviour vector not at all; so the data a map is fitted on is an input, and a mixture of
kinds (style pairs, A/B behaviour items, dialogue turns, general-text corpus pairs) is what makes a map
general. Each source is an extraction run (`python -m stf_jax.extract --pairs NAME`) holding both models;
its rows are the runs' unit steering vectors, paired across models by pair id.

Weights are shares: a source of weight w contributes w / Σw of the total row weight, however many rows
it has (a corpus of 800 pairs does not drown 60 A/B items). The ridge-affine map (the LRT paper's map on
paired vectors) needs only the weighted first and second moments of the rows, so sources are streamed
one layer at a time in memory O(d²), and a trait's moments can be subtracted from the total to refit
without it: leave-one-trait-out costs one solve per trait (`evaluate_kinds`).

A corpus run (`extract --corpus`, token states) is a source too (`CorpusSourceRun`): paired token states
when both models tokenize alike, per-text mean states otherwise, each relative to the corpus mean.

Rows are split train/test per source (pinned `split` fields first, else a text-disjoint, trait-stratified
split; corpus runs: every fifth text); the deployed map is fitted on the training rows only, so the held-out figures it prints and
records are the quality of the map that is saved.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..align.affine import AffineMap
from ..extract.rundir import AlignInputError, ModelRef, load_vectors, model_pair, pair_table, zero_rows
from ..data import dataset_hash, split_pairs
from .coverage import coverage_basis


@dataclasses.dataclass(frozen=True)
class Source:
    """One kind of training data: an extraction run holding both models, its weight, traits to leave out."""

    run: Path
    weight: float = 1.0
    exclude_traits: tuple[str, ...] = ()

    def __post_init__(self):
        if not (np.isfinite(self.weight) and self.weight > 0):
            raise AlignInputError(f"weight of {self.run}: must be a positive number, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class Moments:
    """Weighted sufficient statistics of paired rows (float64): total weight, sums, second moments."""

    w: float
    sx: np.ndarray   # [d_s]
    sy: np.ndarray   # [d_t]
    sxx: np.ndarray  # [d_s, d_s]
    sxy: np.ndarray  # [d_s, d_t]

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> "Moments":
        x, y, w = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(w, np.float64)
        xw = x * w[:, None]
        return cls(float(w.sum()), xw.sum(0), (y * w[:, None]).sum(0), xw.T @ x, xw.T @ y)

    def __add__(self, o: "Moments") -> "Moments":
        return Moments(self.w + o.w, self.sx + o.sx, self.sy + o.sy, self.sxx + o.sxx, self.sxy + o.sxy)

    def __sub__(self, o: "Moments") -> "Moments":
        return Moments(self.w - o.w, self.sx - o.sx, self.sy - o.sy, self.sxx - o.sxx, self.sxy - o.sxy)

    @staticmethod
    def sum(ms: Sequence["Moments"]) -> "Moments":
        return functools.reduce(operator.add, ms)

    def scatter(self) -> np.ndarray:
        """[d_s, d_s] the centered source scatter per unit weight (what a fit is solved with; coverage's basis)."""
        if self.w <= 0:
            raise AlignInputError("no training rows to fit a map on")
        mu_s = self.sx / self.w
        return self.sxx / self.w - np.outer(mu_s, mu_s)


def solve_moments(m: Moments, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [d_s, d_t], b [d_t], G [d_s, d_s]) in float64: the ridge-affine map of `align.affine.fit_affine`
    (same relative ridge) from moments, and the centered source scatter per unit weight it was solved with."""
    gram = m.scatter()                             # [d_s, d_s]
    mu_s, mu_t = m.sx / m.w, m.sy / m.w
    cross = m.sxy / m.w - np.outer(mu_s, mu_t)     # [d_s, d_t]
    lam = ridge * np.trace(gram) / gram.shape[0]
    a = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), cross)
    return a, mu_t - mu_s @ a, gram


def fit_affine_moments(m: Moments, ridge: float) -> tuple[AffineMap, np.ndarray]:
    """`solve_moments` as a float32 `AffineMap` (what map files hold), and the scatter (for coverage)."""
    a, b, gram = solve_moments(m, ridge)
    return AffineMap(np.asarray(a, np.float32), np.asarray(b, np.float32)), gram


@dataclasses.dataclass
class SourceRun:
    """One source opened: both models' refs, the pair table, each row's trait and split side."""

    source: Source
    ref_s: ModelRef
    ref_t: ModelRef
    order: np.ndarray    # [n] the run's rows in pair-table order (both models: one run)
    traits: np.ndarray   # [n] str
    train: np.ndarray    # [n] bool
    ids: tuple[str, ...]
    data_hash: str
    endings: np.ndarray  # [n] str: the last characters of both texts (what a last-token vector reads)

    @classmethod
    def open(cls, source: Source, source_model: str, target_model: str, test_fraction: float = 0.2,
             seed: int = 0) -> "SourceRun":
        ref_s, ref_t = model_pair(source.run, source_model, target_model, hint=_BOTH_MODELS)
        table, orders = pair_table([ref_s, ref_t])
        split = split_pairs(table.pairs, test_fraction=test_fraction, seed=seed)
        test = set(split.test)
        return cls(source, ref_s, ref_t, orders[Path(source.run)], np.array(table.traits),
                   np.array([pid not in test for pid in table.pair_ids]), table.pair_ids,
                   dataset_hash(table.pairs), np.array([p.positive[-3:] + "|" + p.negative[-3:] for p in table.pairs]))

    @property
    def trait_names(self) -> list[str]:
        return sorted(set(self.traits.tolist()))

    def rows(self, ls: int | tuple[int, ...], lt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x_s [n, d_s] (a stack of source layers: [n, layers * d_s]), x_t [n, d_t], usable [n] bool) unit
        steering vectors at one layer pair."""
        x_s = stacked_vectors(self.ref_s, source_layers(ls), self.order)
        x_t = load_vectors(self.ref_t, lt, self.order)
        usable = ~(zero_rows(x_s) | zero_rows(x_t)) & ~np.isin(self.traits, self.source.exclude_traits)
        return x_s, x_t, usable

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    @property
    def n_train(self) -> int:
        return int(self.train.sum())

    def row_weight(self) -> float:
        """The weight of one training row: the source's share spread over its training rows."""
        n = int((self.train & ~np.isin(self.traits, self.source.exclude_traits)).sum())
        if n == 0:
            raise AlignInputError(f"{self.source.run}: no training rows left")
        return self.source.weight / n


def source_layers(ls: int | tuple[int, ...]) -> tuple[int, ...]:
    """The source layers of a layer pair: one, or a many-to-one map's stack."""
    return tuple(ls) if isinstance(ls, tuple) else (ls,)


def stacked_vectors(ref: ModelRef, layers: tuple[int, ...], order) -> np.ndarray:
    """[n, len(layers) * d_model]: each row's unit vectors at `layers`, side by side (one layer: as loaded)."""
    return np.concatenate([load_vectors(ref, lay, order) for lay in layers], axis=1)


CORPUS_STATES = "corpus_states"  # the one "trait" of a corpus-run source
_BOTH_MODELS = " (extract every source with both models)"


@dataclasses.dataclass
class CorpusSourceRun:
    """A corpus run (`python -m stf_jax.extract --corpus`) as a source: the LRT paper's general-text rows.

    Rows are paired token states when both models tokenize the corpus identically (`pairing` "token"),
    else per-text mean states ("text_mean", any two tokenizers); each is taken relative to the mean of the
    training rows and normalised, so that, like a steering vector, a row is a difference of states. Every
    fifth text is held out. The layer files are read `chunk_rows` rows at a time (two passes: the mean,
    then the moments), so memory stays O(chunk · d + d²) plus one [n_texts, d] table for text means,
    whatever the corpus size; a sample of at most `sample` held-out rows is kept for the quality figure.
    To the mixture it presents those held-out rows only (`traits`, `train` describe them); its training
    rows enter as moments (`stream`)."""

    source: Source
    ref_s: ModelRef
    ref_t: ModelRef
    pairing: str
    row_texts: np.ndarray  # [n_rows] text index of each row (token rows or texts)
    data_hash: str
    chunk_rows: int = 65536
    sample: int = 4096

    @classmethod
    def open(cls, source: Source, source_model: str, target_model: str) -> "CorpusSourceRun":
        from ..extract.store import layer_row_chunks, read_manifest

        manifest = read_manifest(source.run)
        ref_s, ref_t = model_pair(source.run, source_model, target_model, "corpus", hint=_BOTH_MODELS)
        index = [np.concatenate([np.stack([c["text_index"], c["token_index"]]) for c in layer_row_chunks(
            source.run, ref.name, ref.layers[0], ("text_index", "token_index"))], axis=1) for ref in (ref_s, ref_t)]
        same = index[0].shape == index[1].shape and np.array_equal(index[0], index[1])
        if not same and not np.array_equal(np.unique(index[0][0]), np.unique(index[1][0])):
            raise AlignInputError(f"{source.run}: {source_model} and {target_model} have states for different texts")
        texts = index[0][0] if same else np.unique(index[0][0])
        return cls(source, ref_s, ref_t, "token" if same else "text_mean", texts,
                   str((manifest.get("source") or {}).get("hash")))

    @property
    def is_train(self) -> np.ndarray:
        return self.row_texts % 5 != 4

    @property
    def sample_rows(self) -> np.ndarray:
        test = np.flatnonzero(~self.is_train)
        return test[np.linspace(0, len(test) - 1, min(len(test), self.sample)).astype(int)] if len(test) else test

    # the interface the mixture reads (held-out sample rows only)
    @property
    def traits(self) -> np.ndarray:
        return np.full(len(self.sample_rows), CORPUS_STATES)

    @property
    def train(self) -> np.ndarray:
        return np.zeros(len(self.sample_rows), bool)

    @property
    def endings(self) -> np.ndarray:
        return np.full(len(self.sample_rows), "")

    @property
    def trait_names(self) -> list[str]:
        return [CORPUS_STATES]

    @property
    def n_rows(self) -> int:
        return len(self.row_texts)

    @property
    def n_train(self) -> int:
        return int(self.is_train.sum())

    def row_weight(self) -> float:
        return self.source.weight / max(self.n_train, 1)

    def _states(self, ref: ModelRef, layer: int):
        """Chunks [m, d] of rows (token pairing), or the one [n_texts, d] table of text means."""
        from ..extract.store import layer_row_chunks

        chunks = layer_row_chunks(self.source.run, ref.name, layer, ("states", "text_index"), self.chunk_rows)
        if self.pairing == "token":
            return (np.asarray(c["states"], np.float64) for c in chunks)
        pos = {int(t): i for i, t in enumerate(self.row_texts)}
        sums, counts = np.zeros((len(pos), ref.d_model)), np.zeros(len(pos))
        for c in chunks:
            rows = np.array([pos[int(t)] for t in c["text_index"]])
            np.add.at(sums, rows, c["states"])
            np.add.at(counts, rows, 1)
        return iter([sums / np.maximum(counts, 1)[:, None]])

    def stream(self, ls: int, lt: int) -> tuple[Moments, np.ndarray, np.ndarray]:
        """(moments of the weighted training rows, held-out sample x_s [m, d_s], x_t [m, d_t]) at one layer pair."""
        if isinstance(ls, tuple):
            raise AlignInputError(f"{self.source.run}: a corpus run's token states are one layer at a time; a "
                                  "many-to-one map is fitted on pair runs (extract --pairs ...) only")
        train, w = self.is_train, self.row_weight()
        mu = []
        for ref, lay in ((self.ref_s, ls), (self.ref_t, lt)):
            total, a = np.zeros(ref.d_model), 0
            for x in self._states(ref, lay):
                total += x[train[a:a + len(x)]].sum(0)
                a += len(x)
            mu.append(total / max(self.n_train, 1))
        keep = np.zeros(self.n_rows, bool)
        keep[self.sample_rows] = True
        out, samples, a = None, ([], []), 0
        for x, y in zip(self._states(self.ref_s, ls), self._states(self.ref_t, lt)):
            x, y = unit(x - mu[0]), unit(y - mu[1])
            rows = slice(a, a + len(x))
            m = Moments.of(x, y, np.where(train[rows], w, 0.0))
            out = m if out is None else out + m
            samples[0].append(x[keep[rows]])
            samples[1].append(y[keep[rows]])
            a += len(x)
        return out, np.concatenate(samples[0]).astype(np.float32), np.concatenate(samples[1]).astype(np.float32)


def _open_source(s: Source, source_model: str, target_model: str, test_fraction: float, seed: int):
    from ..extract.store import read_manifest

    if read_manifest(s.run).get("kind") == "corpus":
        return CorpusSourceRun.open(s, source_model, target_model)
    return SourceRun.open(s, source_model, target_model, test_fraction, seed)


def open_sources(sources: Sequence[Source], source_model: str, target_model: str, test_fraction: float = 0.2,
                 seed: int = 0) -> list[SourceRun | CorpusSourceRun]:
    """Every source opened (pairs runs and corpus runs), checked to hold the same two models."""
    runs = [_open_source(s, source_model, target_model, test_fraction, seed) for s in sources]
    known = {t for r in runs for t in r.trait_names}
    unknown = sorted({t for s in sources for t in s.exclude_traits} - known)
    if unknown:
        raise AlignInputError(f"excluded trait(s) {unknown} are in none of the sources; their traits: {sorted(known)}")
    for r in runs[1:]:
        for a, b in ((r.ref_s, runs[0].ref_s), (r.ref_t, runs[0].ref_t)):
            if (a.d_model, a.n_layers) != (b.d_model, b.n_layers):
                raise AlignInputError(f"{a.name} differs between {b.run_dir} and {a.run_dir} (d_model, n_layers "
                                      f"{(b.d_model, b.n_layers)} vs {(a.d_model, a.n_layers)}): not the same model")
    return runs


@dataclasses.dataclass
class LayerData:
    """Every source's rows at one layer pair, with per-row mixture weights (0 off the training split)."""

    runs: list[SourceRun | CorpusSourceRun]
    x_s: list[np.ndarray]
    x_t: list[np.ndarray]
    usable: list[np.ndarray]
    streamed: dict[int, Moments]  # sources whose training rows arrive as moments (corpus runs)

    @classmethod
    def load(cls, runs: list, ls: int, lt: int) -> "LayerData":
        xs, xt, usable, streamed = [], [], [], {}
        for i, r in enumerate(runs):
            if isinstance(r, CorpusSourceRun):
                streamed[i], a, b = r.stream(ls, lt)
                u = ~(zero_rows(a) | zero_rows(b))
            else:
                a, b, u = r.rows(ls, lt)
            xs.append(a)
            xt.append(b)
            usable.append(u)
        return cls(runs, xs, xt, usable, streamed)

    def train_weights(self, i: int) -> np.ndarray:
        r = self.runs[i]
        return np.where(self.usable[i] & r.train, r.row_weight(), 0.0)

    def moments(self, i: int, mask: np.ndarray | None = None) -> Moments:
        if i in self.streamed:
            if mask is not None:
                raise ValueError("a streamed source's rows cannot be masked")
            return self.streamed[i]
        w = self.train_weights(i) if mask is None else np.where(mask, self.train_weights(i), 0.0)
        return Moments.of(self.x_s[i], self.x_t[i], w)

    def n_train_rows(self) -> int:
        """Training rows with weight, over every source (streamed sources: all their training rows)."""
        return sum(self.runs[i].n_train if i in self.streamed else int((self.train_weights(i) > 0).sum())
                   for i in range(len(self.runs)))

    def total(self) -> Moments:
        return Moments.sum([self.moments(i) for i in range(len(self.runs))])


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def carry_rows(m: AffineMap, x: np.ndarray) -> np.ndarray:
    """Unit rows through the map (float64), normalised (what `transfer.apply` does to a direction)."""
    return unit(np.asarray(x, np.float64) @ np.asarray(m.weight, np.float64) + np.asarray(m.bias, np.float64))


def held_out_quality(m: AffineMap, data: LayerData, min_rows: int = 4) -> dict[str, Any]:
    """Per source, on its test rows: mean row cosine (carried vs the target's own pair vector) and mean
    trait-level cosine (carried mean vector vs the target's mean vector, traits with >= min_rows rows)."""
    out = {}
    for i, r in enumerate(data.runs):
        test = data.usable[i] & ~r.train
        if not test.any():
            continue
        rows = float(np.mean(np.sum(carry_rows(m, data.x_s[i][test]) * data.x_t[i][test], -1)))
        traits = []
        for t in r.trait_names:
            sel = test & (r.traits == t)
            if sel.sum() >= min_rows:
                carried = carry_rows(m, unit(data.x_s[i][sel].mean(0)))
                traits.append(float(np.sum(carried * unit(data.x_t[i][sel].mean(0)))))
        out[str(r.source.run)] = {"row_cosine": rows, "trait_cosine": float(np.mean(traits)) if traits else None,
                                  "n_test": int(test.sum()), "n_traits": len(traits)}
    return out


def fit_layer(data: LayerData, ridge: float, coverage_axes: int | None = None
              ) -> tuple[AffineMap, tuple[np.ndarray, float], dict[str, Any]]:
    """The deployed map of one layer pair (training rows of every source), its coverage basis and rest
    (`coverage.coverage_basis`), and its held-out quality."""
    m, gram = fit_affine_moments(data.total(), ridge)
    return m, coverage_basis(gram, coverage_axes), held_out_quality(m, data)


def data_record(runs: list[SourceRun], test_fraction: float, seed: int) -> dict[str, Any]:
    """What the maps were fitted on: per source its run, weight, pairs' hash, traits (in map headers)."""
    return {"sources": [{"run": str(r.source.run), "weight": r.source.weight, "dataset_hash": r.data_hash,
                         "rows": getattr(r, "pairing", "pairs"),
                         "n_pairs": r.n_rows, "n_train": r.n_train,
                         "traits": [t for t in r.trait_names if t not in r.source.exclude_traits],
                         "excluded_traits": list(r.source.exclude_traits)} for r in runs],
            "split": {"test_fraction": test_fraction, "seed": seed, "deployed_on": "train"},
            "dataset_hash": dataset_hash_of(runs), "n_pairs": sum(r.n_rows for r in runs),
            "traits": sorted({t for r in runs for t in r.trait_names if t not in r.source.exclude_traits})}


def dataset_hash_of(runs: list[SourceRun]) -> str:
    """One hash naming the whole mixture: every source's pairs hash, weight and exclusions."""
    import hashlib
    import json

    rec = [[r.data_hash, r.source.weight, sorted(r.source.exclude_traits)] for r in runs]
    return hashlib.sha256(json.dumps(rec).encode()).hexdigest()


def log_quality(source: str, target: str, method: str, ls: int | str, lt: int, quality: dict,
                log: Callable[[str], None]) -> None:
    parts = [f"{Path(k).name} {v['trait_cosine']:.3f}" for k, v in quality.items() if v["trait_cosine"] is not None]
    log(f"{source} L{ls} -> {target} L{lt}: {method} (mixture) held-out trait cosine: " + ", ".join(parts))
