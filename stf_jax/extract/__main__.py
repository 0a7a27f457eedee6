"""python -m stf_jax.extract: hidden states and steering vectors from one or several models.

Examples:
  python -m stf_jax.extract --models smollm2-135m gemma3-270m --pairs shipped --layers -6 --out runs/ext
  python -m stf_jax.extract --config configs/extract/shipped_layer-6.yaml
  python -m stf_jax.extract --models smollm2-135m --corpus texts.txt --layers 0.5,-6 --out runs/tok

Multi-host: start one process per host with --coordinator HOST:PORT --num-processes N --process-id I
(each process computes its share of the chunks; process 0 writes the final files).
"""

from __future__ import annotations

import argparse
import re
import sys

from ..core.yamlfile import ConfigFileError, read_config
from ..errors import UserError, cli_main
from ..options import add_fields, fields_from_args
from .driver import ExtractOptions, extract_corpus, extract_pairs


class ExtractConfigError(UserError, ValueError):
    """A --config file that cannot be read."""


# ExtractOptions fields offered as flags (--batch-size, --no-truncate, ...) and YAML keys (batch_size, truncate).
_OPTION_FLAGS = {
    "pooling": "pairs mode pooling: the last token, the answer letter of A/B items ending \"(A)\" (the token before the last), or the mean",
    "dtype": "compute dtype [float32 on CPU, bfloat16 on GPU/TPU; bfloat16 on a CPU with bf16 hardware and "
             "stf_jax[cpu-bf16] multiplies the projections through MKL, f32 elsewhere]",
    "batch_size": "rows per forward pass, rounded up to the device count",
    "chunk_size": "pairs/texts per resumable chunk",
    "max_length": "token cap per text; longer texts are cut, with a warning naming the pair "
                  "[min(the model's context, 2048)]",
    "max_batch_tokens": "padded tokens per forward pass (rows x length); long texts go in smaller batches [16384]",
    "pack_length": "pooled modes: texts of up to this many tokens share rows of this length, each attending only "
                   "to itself (almost no padding; one compiled shape); longer texts go in length buckets; 0: no "
                   "packing [128]",
    "truncate": "cut texts longer than the cap (--no-truncate: refuse them)",
    "chat_template": "wrap texts in each model's chat template",
    "model_parallel": "devices per model replica (splits heads/MLP)",
    "max_tokens_per_text": "corpus mode: keep at most this many tokens per text (deterministic subsample) [all]",
    "seed": "seed for splits and token subsampling",
    "overwrite": "discard a run directory started with other arguments",
    "progress": "progress bars",
}
# YAML keys of earlier releases (the argparse names of negated flags) -> the field they negate
_OLD_KEYS = {"no_truncate": "truncate", "no_progress": "progress"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stf_jax.extract", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are these flags (without --, '-' as '_'; booleans as "
                                    "truncate: false); flags given on the command line win")
    p.add_argument("--models", nargs="+", help="registry names, HF directories, hub ids or .gguf paths")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pairs", help="contrast pairs: 'shipped', 'ab' (A/B items; 'ab-whole', 'ab-chat', 'ab-chat-whole' "
                                    "in other forms), a JSONL/CSV/Parquet file or folder, or hf:NAME[:SPLIT]")
    src.add_argument("--corpus", help="token mode: a text file (one text per line) or JSONL with a 'text' field")
    p.add_argument("--traits", nargs="+", help="only these traits (pairs mode)")
    p.add_argument("--per-trait", type=int, help="at most this many pairs per trait, in dataset order")
    p.add_argument("--split", choices=["train", "test"], help="only this side of the seeded 80/20 split")
    p.add_argument("--layers", default="-6",
                   help="comma list of indices (-6 = sixth from last), relative depths (0.67), ranges or 'all' [-6]")
    add_fields(p, ExtractOptions, _OPTION_FLAGS)
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--coordinator", help="multi-host: HOST:PORT of process 0 (jax.distributed)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    return p


def _config_keys(cfg: dict, path: str) -> dict:
    """Old negated keys (no_truncate: true) -> the field (truncate: false), with a deprecation message."""
    out = dict(cfg)
    for old, field in _OLD_KEYS.items():
        if old in out:
            if field in out:
                raise ExtractConfigError(f"--config {path}: give {field} or {old}, not both")
            value = out.pop(old)
            if not isinstance(value, bool):
                raise ExtractConfigError(f"--config {path}: {old} must be true or false, got {value!r}")
            out[field] = not value
            print(f"{path}: key {old}: {str(value).lower()} is deprecated; write {field}: {str(not value).lower()}",
                  file=sys.stderr)
    return out


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
            cfg = read_config(args.config, f"--config {args.config}")
        except ConfigFileError as e:
            raise ExtractConfigError(str(e)) from None
        cfg = _config_keys(cfg, args.config)
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
    opts = ExtractOptions(layers=str(args.layers), **fields_from_args(args, _OPTION_FLAGS))
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
    from ..core.xla_flags import cpu_defaults

    cpu_defaults()  # this process only extracts: XLA's own dots, set before JAX starts its backend
    cli_main(main)
