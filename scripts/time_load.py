"""Time the first (GGUF conversion) and second (cached) load of each shipped model.

    python scripts/time_load.py [--fresh-cache]

--fresh-cache points STF_JAX_CACHE at an empty temporary directory first, so the first load
includes assembling (gemma3-270m), dequantizing and building the tokenizer.
"""

import argparse
import os
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-cache", action="store_true", help="start from an empty cache")
    parser.add_argument("models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    args = parser.parse_args()
    if args.fresh_cache:
        os.environ["STF_JAX_CACHE"] = tempfile.mkdtemp(prefix="stf_jax_cache_")
    import stf_jax  # after STF_JAX_CACHE is set

    for name in args.models:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            stf_jax.load_model(name, progress=False)
            times.append(time.perf_counter() - t0)
        print(f"{name}: first load {times[0]:.1f}s, second (cached) load {times[1]:.1f}s")


if __name__ == "__main__":
    main()
