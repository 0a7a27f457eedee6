"""bf16 matmuls on CPUs that have bf16 hardware, through Intel MKL's `cblas_gemm_bf16bf16f32`.

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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
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


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A dense layer's contraction, lhs [..., K] · rhs [K, N] -> [..., N] in lhs's dtype, through MKL: both
    sides rounded to bf16 (bf16 weights pass unchanged), the products summed in f32. Any other contraction is
    refused (flax's Dense is the only caller)."""
    import jax
    import jax.numpy as jnp

    (lc, rc), (lb, rb) = dimension_numbers
    if tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or lb or rb or rhs.ndim != 2:
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


def dense_dot_general(gemm_dtype):
    """The `dot_general` of a dense layer whose inputs are multiplied in `gemm_dtype`: MKL's bf16 GEMM for
    bf16 (set by the decoder only where `bf16_gemms`), else None (XLA's dot)."""
    import jax.numpy as jnp

    return dot_general if gemm_dtype is not None and jnp.dtype(gemm_dtype) == jnp.dtype(jnp.bfloat16) else None
