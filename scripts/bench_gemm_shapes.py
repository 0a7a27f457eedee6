"""XLA:CPU's f32 dense-layer product at model shapes, plain and stride-padded (`cpu_gemm.stride_padded`).

    python scripts/bench_gemm_shapes.py                     # gemma3-270m's and smollm2-135m's projection shapes
    python scripts/bench_gemm_shapes.py --shapes 4096x640x2048 4096x640x2064 --reps 7

For each [M, K] x [K, N]: GFLOP/s of XLA's dot as it is, and of the same product through `stride_padded`
(which widens the weight only where N is a multiple of 1024 from 2048 up, at least 512 rows), medians of
--reps timed calls, the two variants alternating so a drifting machine affects both; then the CPU's flags.
Eigen's GEMM slows down when the output's row stride is a multiple of 1024 floats (N = 2048: cache-set
aliasing); this is the measurement behind that rule.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEFAULT = ["4096x640x1024", "4096x640x2048", "4096x2048x640", "4096x640x2064", "512x640x2048",
           "4096x576x1536", "4096x1536x576", "4096x640x4096"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT, help="MxKxN products [gemma3/smollm2 shapes]")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per variant [5]")
    args = parser.parse_args(argv)
    from stf_jax.core.xla_flags import cpu_defaults

    cpu_defaults()  # as `python -m stf_jax.extract` runs
    import jax

    from stf_jax.bench.device import cpu_flags
    from stf_jax.models import cpu_gemm

    dims = (((1,), (0,)), ((), ()))
    variants = {"xla": jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims)),
                "stride_padded": jax.jit(lambda a, b: cpu_gemm.stride_padded(a, b, dims))}
    print(f"{'M x K x N':>16s} {'xla GFLOP/s':>12s} {'stride_padded':>14s}  padded?")
    for shape in args.shapes:
        m, k, n = (int(x) for x in shape.lower().split("x"))
        key = jax.random.PRNGKey(0)
        a, b = jax.random.normal(key, (m, k)), jax.random.normal(key, (k, n))
        times = {name: [] for name in variants}
        for fn in variants.values():
            fn(a, b).block_until_ready()
        for _ in range(args.reps):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn(a, b).block_until_ready()
                times[name].append(time.perf_counter() - t0)
        rate = {name: 2 * m * k * n / np.median(t) / 1e9 for name, t in times.items()}
        print(f"{shape:>16s} {rate['xla']:12.0f} {rate['stride_padded']:14.0f}  "
              f"{'yes' if cpu_gemm._stride_aliased(m, n) else 'no'}", flush=True)
    print(f"CPU: {cpu_flags()}; jax {jax.__version__}, {jax.devices()[0].device_kind}")


if __name__ == "__main__":
    main()
