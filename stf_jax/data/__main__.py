"""Command line for contrast-pair data: validate, split, stats, build.

python -m stf_jax.data validate                      # the shipped set
python -m stf_jax.data validate my_pairs.jsonl --min-per-trait 20
python -m stf_jax.data split shipped --seed 0 --out split.json
python -m stf_jax.data stats
python -m stf_jax.data build verbosity --source ~/data/cnn_dailymail --out verbosity.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from stf_jax.data.pairs import PairFormatError, is_shipped, load_pairs, save_pairs
from stf_jax.errors import UserError, cli_main, report_user_error
from stf_jax.data.recipes import RECIPES, build_recipe
from stf_jax.data.schema import TRAITS
from stf_jax.data.split import split_pairs
from stf_jax.data.stats import format_stats, pair_stats
from stf_jax.data.validate import DEFAULT_MIN_PER_TRAIT, DEFAULT_THRESHOLD, validate_pairs

DATA_HELP = 'dataset: "shipped" (alias "stf-26", the default), a .jsonl/.csv/.parquet file, or a directory of them'


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok; 1 `validate` found problems (a malformed record is one); 2 bad input or arguments."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (UserError, ValueError, FileNotFoundError, ImportError) as error:  # bad input, missing data or pyarrow
        return report_user_error(error)


def _validate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        pairs = load_pairs(args.data, traits=args.traits)
    except PairFormatError as error:  # a malformed record is a validation finding: exit 1, like any other
        print(f"error: {error}", file=sys.stderr)
        return 1
    expected = (args.traits or TRAITS) if is_shipped(args.data) else None
    report = validate_pairs(pairs, threshold=args.threshold, min_per_trait=args.min_per_trait, expected_traits=expected)
    print(report.render(max_items=args.max_items))
    print(f"\nchecked in {time.perf_counter() - start:.2f}s")
    return 0 if report.ok else 1


def _split(args: argparse.Namespace) -> int:
    pairs = load_pairs(args.data, traits=args.traits)
    split = split_pairs(pairs, test_fraction=args.test_fraction, seed=args.seed)
    split.save(args.out)
    trait_of = {pair.id: pair.trait for pair in pairs}
    test_counts = Counter(trait_of[pair_id] for pair_id in split.test)
    total_counts = Counter(pair.trait for pair in pairs)
    print(f"{'trait':<22}{'train':>7}{'test':>7}")
    for trait in sorted(total_counts):
        print(f"{trait:<22}{total_counts[trait] - test_counts[trait]:>7}{test_counts[trait]:>7}")
    print(f"{'total':<22}{len(split.train):>7}{len(split.test):>7}")
    print(f"wrote {args.out} (seed {args.seed}, dataset sha256 {split.dataset_hash[:16]}...)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    print(format_stats(pair_stats(load_pairs(args.data, traits=args.traits))))
    return 0


def _build(args: argparse.Namespace) -> int:
    pairs = build_recipe(args.recipe, source=args.source, max_pairs=args.max_pairs)
    save_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} {args.recipe} pairs from {RECIPES[args.recipe].dataset.name} to {args.out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stf_jax.data", description="Contrast-pair datasets: check, split, summarize, build."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check schema, duplicates, near-duplicates, counts and lengths; exit 1 if anything is wrong",
        description="Check a dataset and print a report; exits 1 when there is any error. "
        "For the shipped set all 26 paper traits must be present.",
    )
    _add_data_arguments(validate)
    validate.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="character 5-gram Jaccard at or above which two texts of different pairs count as near-duplicates "
        f"(default {DEFAULT_THRESHOLD})",
    )
    validate.add_argument(
        "--min-per-trait",
        type=int,
        default=DEFAULT_MIN_PER_TRAIT,
        help=f"fewest pairs a trait may have (default {DEFAULT_MIN_PER_TRAIT})",
    )
    validate.add_argument("--max-items", type=int, default=25, help="errors and warnings listed in full (default 25)")
    validate.set_defaults(run=_validate)

    split = commands.add_parser(
        "split",
        help="write a deterministic, trait-stratified, text-disjoint train/test split as JSON",
        description="Split pairs into train and test ids; the same pairs and seed always give the same split.",
    )
    _add_data_arguments(split)
    split.add_argument("--seed", type=int, default=0, help="seed of numpy.random.default_rng (default 0)")
    split.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of each trait's pairs in test (default 0.2)"
    )
    split.add_argument("--out", required=True, help="output JSON file: seed, test_fraction, dataset_hash, train, test")
    split.set_defaults(run=_split)

    stats = commands.add_parser(
        "stats",
        help="print pairs per trait and word lengths of both sides",
        description="Print a table of pairs per trait and positive/negative word-length mean, min and max.",
    )
    _add_data_arguments(stats)
    stats.set_defaults(run=_stats)

    recipe_lines = "\n".join(
        f"  {name:<16} {recipe.dataset.name}: {recipe.summary}" for name, recipe in sorted(RECIPES.items())
    )
    build = commands.add_parser(
        "build",
        help="build pairs from a public dataset (the paper's Table 4 sources)",
        description=f"Build one trait's pairs from a local copy of a public dataset.\n\nrecipes:\n{recipe_lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("recipe", choices=sorted(RECIPES), metavar="RECIPE", help="trait to build (see the list above)")
    build.add_argument(
        "--source",
        help="file or directory holding the dataset as published; default: $STF_DATASETS_DIR/<dataset>, "
        "then the Hugging Face hub and datasets caches",
    )
    build.add_argument("--out", required=True, help="output .jsonl file")
    build.add_argument("--max-pairs", type=int, help="most pairs to build (default: the paper's count for the trait)")
    build.set_defaults(run=_build)
    return parser


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", default="shipped", metavar="NAME_OR_PATH", help=DATA_HELP)
    parser.add_argument("--traits", nargs="+", metavar="TRAIT", help="only these traits (default: all)")


if __name__ == "__main__":
    cli_main(main)
