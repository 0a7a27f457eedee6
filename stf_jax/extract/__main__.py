"""python -m stf_jax.extract: hidden states and steering vectors from one or several models.

Examples:
  python -m stf_jax.extract --models smollm2-135m gemma3-270m --pairs shipped --layers -6 --out runs/ext
  python -m stf_jax.extract --config configs/extract/shipped_last6.yaml
  python -m stf_jax.extract --models smollm2-135m --corpus texts.txt --layers 0.5,-6 --out runs/tok

Multi-host: start one process per host with --coordinator HOST:PORT --num-processes N --process-id I
(each process computes its share of the chunks; process 0 writes the final files).
"""

from __future__ import annotations

import argparse
import re
import sys

import yaml

from ..errors import UserError, cli_main, yaml_problem
from .run import ExtractOptions, extract_corpus, extract_pairs


class ExtractConfigError(UserError, ValueError):
    """A --config file that cannot be read."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stf_jax.extract", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are these flags (without --, '-' as '_'); "
                                    "flags given on the command line win")
    p.add_argument("--models", nargs="+", help="registry names, HF directories, hub ids or .gguf paths")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pairs", help="contrast pairs: 'shipped', a JSONL/CSV/Parquet file or folder, or hf:NAME[:SPLIT]")
    src.add_argument("--corpus", help="token mode: a text file (one text per line) or JSONL with a 'text' field")
    p.add_argument("--traits", nargs="+", help="only these traits (pairs mode)")
    p.add_argument("--per-trait", type=int, help="at most this many pairs per trait, in dataset order")
    p.add_argument("--split", choices=["train", "test"], help="only this side of the seeded 80/20 split")
    p.add_argument("--layers", default="-6",
                   help="comma list of indices (-6 = sixth from last), relative depths (0.67) or 'all' [-6]")
    p.add_argument("--pooling", default="last", choices=["last", "mean"], help="pairs mode pooling [last]")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype [float32 on CPU, bfloat16 on GPU/TPU]")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass, rounded up to the device count [32]")
    p.add_argument("--chunk-size", type=int, default=256, help="pairs/texts per resumable chunk [256]")
    p.add_argument("--max-length", type=int, help="token cap per text; longer texts are cut, with a warning naming "
                                                  "the pair [min(the model's context, 2048)]")
    p.add_argument("--max-batch-tokens", type=int, help="padded tokens per forward pass (rows x length); long "
                                                        "texts go in smaller batches [16384]")
    p.add_argument("--no-truncate", action="store_true", help="refuse texts longer than the context instead of cutting them")
    p.add_argument("--chat-template", action="store_true", help="wrap texts in each model's chat template")
    p.add_argument("--model-parallel", type=int, default=1, help="devices per model replica (splits heads/MLP) [1]")
    p.add_argument("--max-tokens-per-text", type=int, help="corpus mode: keep at most this many tokens per text "
                                                           "(deterministic subsample)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits and token subsampling [0]")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="discard a run directory started with other arguments")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--coordinator", help="multi-host: HOST:PORT of process 0 (jax.distributed)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    return p


def _join_negative_layers(argv: list[str]) -> list[str]:
    """Let `--layers -6` work like `--layers=-6` (argparse reads a leading '-' as a flag)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--layers" and i + 1 < len(argv) and re.fullmatch(r"-[0-9][0-9.,\-]*", argv[i + 1]):
            out.append(f"--layers={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(_join_negative_layers(sys.argv[1:] if argv is None else list(argv)))
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                cfg = yaml.safe_load(f) or {}
        except OSError as e:
            raise ExtractConfigError(f"--config {args.config}: cannot read ({e.strerror or e})") from None
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise ExtractConfigError(f"--config {args.config}: not valid YAML ({yaml_problem(e)})") from None
        if not isinstance(cfg, dict):
            raise ExtractConfigError(f"--config {args.config}: expected a mapping of flag names to values")
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - known)
        if unknown:
            parser.error(f"{args.config}: unknown keys {unknown}")
        defaults = parser.parse_args([])
        for key, value in cfg.items():
            if getattr(args, key) == getattr(defaults, key):  # command line wins
                if key == "layers" and isinstance(value, list):
                    value = ",".join(map(str, value))
                setattr(args, key, value)
    if not args.models:
        parser.error("--models is required (on the command line or in --config)")
    if not (args.pairs or args.corpus):
        parser.error("give --pairs or --corpus")
    if not args.out:
        parser.error("--out is required")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.coordinator:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    opts = ExtractOptions(
        layers=str(args.layers), pooling=args.pooling, dtype=args.dtype, batch_size=args.batch_size,
        chunk_size=args.chunk_size, max_length=args.max_length, max_batch_tokens=args.max_batch_tokens,
        truncate=not args.no_truncate,
        chat_template=args.chat_template, model_parallel=args.model_parallel,
        max_tokens_per_text=args.max_tokens_per_text, seed=args.seed, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.pairs:
        from .inputs import read_pairs

        pairs, name = read_pairs(args.pairs, args.traits, args.per_trait, args.split, args.seed)
        extract_pairs(args.models, pairs, args.out, opts, dataset_name=name)
    else:
        from .inputs import read_corpus

        texts, skipped = read_corpus(args.corpus)
        if skipped:
            print(f"{args.corpus}: skipped {skipped} empty line(s)", file=sys.stderr)
        extract_corpus(args.models, texts, args.out, opts, corpus_name=str(args.corpus))
    return 0


if __name__ == "__main__":
    cli_main(main)
