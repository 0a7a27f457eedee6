"""`python -m stf_jax.models`: list families (what was verified) and registry models, print per-layer
hidden-state stats, convert GGUF. Without a command it prints the families and the registry."""

from __future__ import annotations

import argparse
import time

from ..errors import UserError, cli_main


class ModelArgumentError(UserError, ValueError):
    """A model name or file that cannot be found or read."""


def main(argv=None) -> int:
    from ..errors import report_user_error

    try:
        return _main(argv)
    except UserError as e:
        return report_user_error(e)
    except (FileNotFoundError, KeyError, ValueError) as e:  # a model that cannot be found or read
        return report_user_error(ModelArgumentError(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)))


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stf_jax.models", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("families", help="list the supported model families and what the tests verified for each")
    sub.add_parser("list", help="list registry model names and where their weights come from")
    stats = sub.add_parser("stats", help="load models and print per-layer hidden-state statistics")
    stats.add_argument("models", nargs="+", help="registry names, HF directories, hub ids or .gguf paths")
    stats.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="parameter dtype")
    stats.add_argument("--sentence", action="append", help="sentence to run (repeatable; default: 4 built-in)")
    convert = sub.add_parser("convert", help="convert a GGUF into a cached HF directory and print its path")
    convert.add_argument("gguf", help="path to a .gguf file or a registry name of a GGUF model")
    args = parser.parse_args(argv)

    if args.command in ("families", None):
        from .config import VERIFIED

        print("families (HF model_type) and what the tests verify (tiny = small random checkpoints, f32, "
              "512 tokens, left and right padding, every hidden state vs transformers within 1e-4 of max |h|, 1e-5 "
              "for the families of tests/test_families.py):")
        for family, (models, checks) in VERIFIED.items():
            print(f"  {family:9s} {models}: {checks}")
        if args.command == "families":
            return 0
        print("\nregistry:")
    if args.command in ("list", None):
        from .registry import registry, registry_config

        for name, e in sorted(registry().items()):
            where = e.get("repo") or f"PyPI package {e['package']} ({e['file']})"
            family = registry_config(name).family if "config" in e else ""
            print(f"{name:24s} {family:9s} {e['source']:14s} {where}")
        return 0
    if args.command == "convert":
        from .loading import convert_gguf
        from .registry import registry, resolve

        path = resolve(args.gguf) if args.gguf in registry() else args.gguf
        print(convert_gguf(path))
        return 0

    from ..models.loading import load_model
    from .inspect import DEFAULT_SENTENCES, format_stats, layer_stats

    for name in args.models:
        t0 = time.perf_counter()
        model = load_model(name, dtype=args.dtype)
        loaded = time.perf_counter() - t0
        rows = layer_stats(model, args.sentence or DEFAULT_SENTENCES)
        print(format_stats(name, model, rows))
        print(f"(loaded in {loaded:.1f}s, forward + stats in {time.perf_counter() - t0 - loaded:.1f}s)\n")
    return 0


if __name__ == "__main__":
    cli_main(main)
