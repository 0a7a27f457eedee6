"""Deterministic, trait-stratified, text-disjoint train/test split.

Extraction fits a steering vector on the train pairs and evaluation uses the test
pairs, for every model; so the split must depend on nothing but the pairs and the
seed (not on the model, the file order or the machine), and no text may sit on
both sides, or evaluation would score texts the vector was fitted on.

Method: pairs that share a text (normalized, either side) are joined into one
component with union-find; each component goes wholly to train or to test. Per
trait (a component counts toward the trait of its smallest id), components are
shuffled with ``numpy.random.default_rng(seed)`` and taken into test while that
keeps the trait's test count within ``round(test_fraction * n_trait)``. Pairs that
carry a ``split`` field are pinned there, and so is the rest of their component.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stf_jax.data.schema import ContrastPair, dataset_hash, normalize_text


@dataclass(frozen=True)
class Split:
    """Pair ids on each side of a split, with what it was computed from."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    test_fraction: float
    dataset_hash: str

    def partition(self, pairs: Sequence[ContrastPair]) -> tuple[list[ContrastPair], list[ContrastPair]]:
        """The given pairs divided into (train, test), each in input order."""
        test_ids = set(self.test)
        train_ids = set(self.train)
        unknown = [pair.id for pair in pairs if pair.id not in test_ids and pair.id not in train_ids]
        if unknown:
            raise ValueError(f"{len(unknown)} pair id(s) not in this split, e.g. {unknown[:3]}")
        return [p for p in pairs if p.id in train_ids], [p for p in pairs if p.id in test_ids]

    def save(self, path: str | Path) -> None:
        """Write as JSON: seed, test_fraction, dataset_hash, and the two id lists."""
        payload = {
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "dataset_hash": self.dataset_hash,
            "train": list(self.train),
            "test": list(self.test),
        }
        Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def split_pairs(pairs: Sequence[ContrastPair], test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split pairs into train and test ids; see the module docstring for the method."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    ordered = sorted(pairs, key=lambda pair: pair.id)
    for previous, current in itertools.pairwise(ordered):
        if previous.id == current.id:
            raise ValueError(f"duplicate pair id {current.id!r}; ids must be unique to split")
    components = _text_components(ordered)
    assignment: dict[int, str] = {}
    for root, members in components.items():
        pins = {ordered[index].split for index in members} - {None}
        if len(pins) > 1:
            ids = sorted(ordered[index].id for index in members)
            raise ValueError(f"pairs {ids} share a text but are pinned to different splits")
        if pins:
            assignment[root] = pins.pop()

    by_trait: dict[str, list[int]] = defaultdict(list)
    trait_sizes: dict[str, int] = defaultdict(int)
    pinned_test: dict[str, int] = defaultdict(int)
    for pair in ordered:
        trait_sizes[pair.trait] += 1
    for root, members in components.items():
        trait = ordered[members[0]].trait
        if root in assignment:
            pinned_test[trait] += len(members) if assignment[root] == "test" else 0
        else:
            by_trait[trait].append(root)

    rng = np.random.default_rng(seed)
    for trait in sorted(by_trait):
        roots = by_trait[trait]
        taken = pinned_test[trait]
        target = round(test_fraction * trait_sizes[trait])
        for position in rng.permutation(len(roots)):
            root = roots[position]
            size = len(components[root])
            fits = taken + size <= target
            assignment[root] = "test" if fits else "train"
            taken += size if fits else 0

    side_of = {index: assignment[root] for root, members in components.items() for index in members}
    return Split(
        train=tuple(ordered[i].id for i in range(len(ordered)) if side_of[i] == "train"),
        test=tuple(ordered[i].id for i in range(len(ordered)) if side_of[i] == "test"),
        seed=seed,
        test_fraction=test_fraction,
        dataset_hash=dataset_hash(ordered),
    )


def _text_components(ordered: Sequence[ContrastPair]) -> dict[int, list[int]]:
    """Union-find over pairs linked by a shared normalized text. A side is read with its prompt: the same
    side under two different prompts ("(A)" answering two questions in the chat template) is two texts;
    under a prompt and under none, one.

    Returns root -> sorted member indices, with roots and members in index order,
    so iteration order is fixed by the (id-sorted) input.
    """
    parent = list(range(len(ordered)))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def union(a: int, b: int) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    by_text: dict[str, dict[str, int]] = defaultdict(dict)  # side text -> prompt -> first pair with both
    for index, pair in enumerate(ordered):
        for text in (normalize_text(pair.positive), normalize_text(pair.negative)):
            union(index, by_text[text].setdefault(pair.prompt, index))
    for owners in by_text.values():  # a text without a prompt is the same text under any prompt
        if "" in owners:
            for index in owners.values():
                union(index, owners[""])
    components: dict[int, list[int]] = defaultdict(list)
    for index in range(len(ordered)):
        components[find(index)].append(index)
    return dict(components)
