"""Contrast-pair data: the shipped 26-trait set, loaders, checks, splits and recipes.

    pairs = load_pairs("shipped", traits=["formality"])
    report = validate_pairs(pairs)
    split = split_pairs(pairs, test_fraction=0.2, seed=0)
    train, test = split.partition(pairs)

Recipes that rebuild the paper's pairs from public datasets live in
``stf_jax.data.recipes``; the command line is ``python -m stf_jax.data``.
"""

from stf_jax.data.pairs import PairFormatError, PairSourceError, load_pairs, save_pairs
from stf_jax.data import corpus as _corpus  # noqa: F401  (registers the generated "corpus" dataset)
from stf_jax.data import ab as _ab  # noqa: F401  (registers "ab-whole", "ab-chat", "ab-chat-whole")
from stf_jax.data.schema import TRAITS, ContrastPair, dataset_hash, normalize_text, word_count
from stf_jax.data.split import Split, split_pairs
from stf_jax.data.stats import TraitStats, format_stats, pair_stats
from stf_jax.data.validate import NearDuplicate, ValidationReport, validate_pairs

__all__ = [
    "TRAITS",
    "ContrastPair",
    "NearDuplicate",
    "PairFormatError",
    "PairSourceError",
    "Split",
    "TraitStats",
    "ValidationReport",
    "dataset_hash",
    "format_stats",
    "load_pairs",
    "normalize_text",
    "pair_stats",
    "save_pairs",
    "split_pairs",
    "validate_pairs",
    "word_count",
]
