"""Dense layers on the CPU: bf16 through Intel MKL's `cblas_gemm_bf16bf16f32` where the CPU has bf16 hardware,
and XLA's dot kept clear of a cache-aliasing slowdown everywhere (`stride_padded`).

Why: XLA:CPU (jaxlib 0.10) lowers every bf16 dot to convert → f32 dot → convert, so on a CPU with
AVX512-BF16 or AMX a bf16 forward runs no faster than f32, while the hardware multiplies bf16 several times
faster (the README's CPU table). MKL's bf16 GEMM (bf16 inputs, f32 accumulation) uses that hardware; it
ships on PyPI (`pip install "stf_jax[cpu-bf16]"`, the `mkl` wheel), so the runtime stays free of PyTorch.

A forward asked for in bf16, on the CPU backend, on a CPU whose flags list `avx512_bf16` or `amx_bf16`, with
MKL found (`bf16_gemms`), computes in f32 and gives its dense layers `dense_dot_general(jnp.bfloat16)` as their
`dot_general`: each projection [..., K] · [K, N] becomes one host call (`jax.pure_callback`) to MKL, while the
residual stream, norms and attention stay f32 with XLA. Everywhere else the dense layers keep XLA's own dot.
The choice is made at trace time.

    STF_JAX_CPU_GEMM=auto      (default) route where the CPU flags and MKL allow
    STF_JAX_CPU_GEMM=xla       never route (XLA's dot everywhere)
    STF_JAX_CPU_GEMM=mkl       route wherever MKL is found, whatever the CPU flags (for tests on any x86 CPU)
    STF_JAX_MKL=/path/libmkl_rt.so.3   the library to load (default: the Python environment's lib/, then the
                               system's search path)

Every other dense layer on the CPU backend keeps XLA's dot, with one change of layout (`stride_padded`):
a product wide enough to hit the cache aliasing of Eigen's GEMM multiplies by its weight widened with zero
columns, and drops them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import math
import os
import sys
from pathlib import Path

_ROW_MAJOR, _NO_TRANS = 101, 111  # CBLAS enums
_THREADING_GNU = 3  # MKL_THREADING_GNU


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo's flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _candidates() -> list[str]:
    if os.environ.get("STF_JAX_MKL"):
        return [os.environ["STF_JAX_MKL"]]
    local = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    found = ctypes.util.find_library("mkl_rt")
    return local + ([found] if found else [])


@functools.lru_cache(maxsize=1)
def _gemm():
    """MKL's cblas_gemm_bf16bf16f32, or None when no MKL can be loaded."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            fn = lib.cblas_gemm_bf16bf16f32
        except (OSError, AttributeError):
            continue
        if not os.environ.get("MKL_THREADING_LAYER"):  # GNU OpenMP, the runtime JAX's neighbours (PyTorch) use
            lib.MKL_Set_Threading_Layer(_THREADING_GNU)
        p, mkl_int = ctypes.c_void_p, ctypes.c_int  # mkl_rt's default LP64 interface: MKL_INT is a C int
        fn.argtypes = [ctypes.c_int] * 3 + [mkl_int] * 3 + [ctypes.c_float, p, mkl_int, p, mkl_int, ctypes.c_float,
                                                            p, mkl_int]
        fn.restype = None
        return fn
    return None


def mode() -> str:
    """"mkl" when bf16 dense layers on the CPU backend go to MKL in this process, else "xla"."""
    choice = os.environ.get("STF_JAX_CPU_GEMM", "auto").lower()
    if choice == "xla" or _gemm() is None:
        return "xla"
    return "mkl" if choice == "mkl" or cpu_has_bf16() else "xla"


def host_gemm(a, b):
    """a [M, K], b [K, N] (bf16, numpy) -> a @ b [M, N] f32, accumulated in f32 by MKL."""
    import numpy as np

    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    (m, k), n = a.shape, b.shape[1]
    c = np.empty((m, n), np.float32)
    if m and n:
        _gemm()(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0,
                c.ctypes.data, n)
    return c


def _dense_contraction(lhs, rhs, dimension_numbers) -> bool:
    """Whether a dot_general is a dense layer's: lhs [..., K] · rhs [K, N], no batch dimensions."""
    (lc, rc), (lb, rb) = dimension_numbers
    return tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb and rhs.ndim == 2


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A dense layer's contraction, lhs [..., K] · rhs [K, N] -> [..., N] in lhs's dtype, through MKL: both
    sides rounded to bf16 (bf16 weights pass unchanged), the products summed in f32. Any other contraction is
    refused (flax's Dense is the only caller)."""
    import jax
    import jax.numpy as jnp

    if not _dense_contraction(lhs, rhs, dimension_numbers):
        raise ValueError(f"cpu_gemm.dot_general handles [..., K] x [K, N] only, got {dimension_numbers}")
    lead, (k, n) = lhs.shape[:-1], rhs.shape
    a = lhs.reshape(-1, k).astype(jnp.bfloat16)
    out = jax.pure_callback(host_gemm, jax.ShapeDtypeStruct((a.shape[0], n), jnp.float32), a,
                            rhs.astype(jnp.bfloat16), vmap_method="sequential")
    return out.reshape(*lead, n).astype(preferred_element_type or lhs.dtype)


def bf16_gemms(dtype) -> bool:
    """Whether a forward asked for in `dtype` multiplies its projections through MKL's bf16 GEMM here: bf16, on
    the CPU backend, with `mode()` "mkl". Decided at trace time."""
    import jax
    import jax.numpy as jnp

    return jnp.dtype(dtype) == jnp.dtype(jnp.bfloat16) and jax.default_backend() == "cpu" and mode() == "mkl"


# Eigen's GEMM (XLA:CPU's dot) runs about 30 % slower when the product's row stride is a multiple of 1024 floats
# (4 KiB): [4096, 640] x [640, N] at 59 GFLOP/s for N = 2048 against 100-113 for N = 1024 or 2064 on a 2-core
# AVX2 EPYC, 78 padded (`scripts/bench_gemm_shapes.py`, README): the output tiles' rows fall into the same
# cache sets. Such a product (wide and
# with many rows: gemma3-270m's MLP gate and up projections in an extraction forward) multiplies by its weight
# widened by one cache line of zero columns and drops them. The padded weight is a copy of [K, N + 16] per call,
# a few % of the product at 512 rows (where the padded product still gains 20-40 %) and less above; decoding's
# few rows keep the plain dot. Each output still sums over K in the same order: on that CPU the extraction
# outputs came out bit-identical.
_ALIASED_STRIDE, _PAD_COLUMNS, _MIN_ROWS = 1024, 16, 512


def _stride_aliased(rows: int, n: int) -> bool:
    return rows >= _MIN_ROWS and n >= 2 * _ALIASED_STRIDE and n % _ALIASED_STRIDE == 0


def stride_padded(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A dense layer's lhs [..., K] · rhs [K, N] through XLA's dot, with rhs widened to N + 16 zero columns
    (then dropped) where the product's rows would alias in the cache (`_stride_aliased`). Only the column
    tiling differs: each output's sum over K is the same. Any other contraction passes to `jax.lax.dot_general`."""
    import jax
    import jax.numpy as jnp

    n = rhs.shape[-1]
    if not _dense_contraction(lhs, rhs, dimension_numbers) or not _stride_aliased(math.prod(lhs.shape[:-1]), n):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    wide = jnp.pad(rhs, ((0, 0), (0, _PAD_COLUMNS)))
    out = jax.lax.dot_general(lhs, wide, dimension_numbers, precision=precision,
                              preferred_element_type=preferred_element_type)
    return out[..., :n]


def dense_dot_general(gemm_dtype):
    """The `dot_general` of a dense layer whose inputs are multiplied in `gemm_dtype`, decided at trace time:
    MKL's bf16 GEMM for bf16 (set by the decoder only where `bf16_gemms`); on the CPU backend otherwise XLA's
    dot with the output stride padded where it aliases (`stride_padded`); elsewhere None (XLA's dot)."""
    import jax
    import jax.numpy as jnp

    if gemm_dtype is not None and jnp.dtype(gemm_dtype) == jnp.dtype(jnp.bfloat16):
        return dot_general
    return stride_padded if jax.default_backend() == "cpu" else None
