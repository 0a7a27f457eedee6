"""Device measurements shared by scripts/accelerator_check.py, scripts/bench_extract.py and
scripts/bench_align.py: the matmul peak (the physical limit every throughput is compared with), matmul FLOPs
of a decoder block, timing with device synchronisation, and stf_jax's extraction throughput against
PyTorch at a registry shape with random weights.

jax, torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def timed(fn, reps: int, sync) -> float:
    """Median seconds of fn() over reps calls after one warm-up; sync(result) waits for the device."""
    sync(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync(x):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return x


def jax_sync(x):
    import jax

    return jax.block_until_ready(x)


def datasheet_peak(kind: str) -> float | None:
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in kind.upper()), None)


def matmul_peaks(n: int, reps: int = 5) -> dict:
    """FLOP/s of an n^3 matmul in bf16 and f32 (full precision) through JAX and PyTorch on the default device
    (the physical limit throughputs are compared with), and how XLA compiles the bf16 dot. PyTorch's CPU bf16
    matmul can run at ~1 GFLOP/s, so on CPU it is timed at 512^3 (recorded as "torch_bfloat16_n")."""
    import re

    import jax
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), np.float32)
    device = torch_device()
    out = {}
    for dtype in ("bfloat16", "float32"):
        x = jnp.asarray(a, dtype)
        prec = jax.lax.Precision.HIGHEST if dtype == "float32" else None
        f = jax.jit(lambda u, v: jnp.matmul(u, v, precision=prec))
        out[f"jax_{dtype}"] = 2 * n ** 3 / timed(lambda: f(x, x), reps, jax_sync)
        tn = n if dtype == "float32" or device == "cuda" else min(n, 512)
        t = torch.as_tensor(a[:tn, :tn], device=device).to(getattr(torch, dtype))
        out[f"torch_{dtype}"] = 2 * tn ** 3 / timed(lambda: t @ t, reps, torch_sync)
        if tn != n:
            out[f"torch_{dtype}_n"] = tn
        if dtype == "bfloat16":
            upcast = re.search(r"= f32\[\d+,\d+\]\{[^}]*\} convert\(", f.lower(x, x).compile().as_text())
            out["xla_bf16_dot"] = "converted to f32" if upcast else "native bf16"
        del x, t
    if jax.devices()[0].platform == "cpu":  # the BLAS NumPy/SciPy references run on
        out["numpy_float32"] = 2 * n ** 3 / timed(lambda: a @ a, reps, lambda r: r)
        from stf_jax.models import cpu_gemm

        if cpu_gemm._gemm() is not None:  # MKL's bf16 GEMM: what stf_jax's bf16 dense layers call on CPU
            import ml_dtypes

            ab = a.astype(ml_dtypes.bfloat16)
            out["mkl_bfloat16"] = 2 * n ** 3 / timed(lambda: cpu_gemm.host_gemm(ab, ab), reps, lambda r: r)
    return out


def block_flops_per_token(cfg, context: float, causal: bool) -> float:
    """Matmul FLOPs per token of one decoder block: 2 x its parameters (the projections) plus QK^T and PV
    over `context` keys (half of them on average when causal=True)."""
    import jax

    from stf_jax.models.decoder import param_shapes

    block_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree_util.tree_leaves(param_shapes(cfg)["layers"]))
    return 2 * block_params + 4 * cfg.n_heads * cfg.head_dim * context * (0.5 if causal else 1.0)


def random_params(cfg, dtype):
    """Random weights of the decoder at cfg (normal, std 0.02) in dtype, generated on the device."""
    import jax
    import jax.numpy as jnp

    from stf_jax.models.decoder import param_shapes

    leaves, tree = jax.tree_util.tree_flatten(param_shapes(cfg, dtype))
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    init = jax.jit(lambda k, s: (0.02 * jax.random.normal(k, s, jnp.float32)).astype(dtype), static_argnums=1)
    return tree.unflatten([init(k, x.shape) for k, x in zip(keys, leaves)])


def extraction_throughput(name: str, layer: int, batch: int, seq: int, steps: int, tiny: bool,
                          peak_tflops: float | None = None, datasheet_tflops: float | None = None) -> dict:
    """Random-weight bf16 extraction at a registry shape: stf_jax (each attention implementation) vs
    PyTorch sdpa as a user writes it and as the equal-work reference, same device, same tokens."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from stf_jax.models.config import config_from_hf
    from stf_jax.models.decoder import attention_implementation, hidden_states
    from stf_jax.models.registry import entry

    hf = dict(entry(name)["config"])
    if tiny:
        hf |= {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096}
    cfg = config_from_hf(hf, name)
    layers = (cfg.resolve_layers([layer])[0],)
    n_run = layers[0]
    params = random_params(cfg, jnp.bfloat16)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    ids_j, mask_j = jax.device_put(ids), jax.device_put(np.ones_like(ids))
    tokens = batch * seq
    res = {"shape": name + (" (tiny)" if tiny else ""), "layer": n_run, "n_layers": cfg.n_layers, "batch": batch,
           "seq": seq, "tokens_per_forward": tokens}

    impls = ["xla"] + (["cudnn"] if attention_implementation(cfg, jnp.bfloat16) == "cudnn" else [])
    pooled = {}
    for impl in impls:
        c = dataclasses.replace(cfg, attention=impl)
        fn = jax.jit(lambda p, i, m, c=c: hidden_states(p, i, m, cfg=c, layers=layers, dtype=jnp.bfloat16,
                                                        collect=lambda h, _: h[:, -1].astype(jnp.float32)))
        t0 = time.perf_counter()
        try:
            pooled[impl] = np.asarray(jax.block_until_ready(fn(params, ids_j, mask_j)))[0]
        except Exception as e:  # noqa: BLE001 - recorded; the other implementation still runs
            res[f"stf_{impl}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"  {impl}: {res[f'stf_{impl}_error']}", flush=True)
            continue
        res[f"stf_{impl}_compile_s"] = time.perf_counter() - t0
        res[f"stf_{impl}_tokens_per_s"] = tokens / timed(lambda: fn(params, ids_j, mask_j), steps, jax_sync)
        print(f"  stf_jax {impl}: {res[f'stf_{impl}_tokens_per_s']:,.0f} tokens/s", flush=True)
    if len(pooled) == 2:
        a, b = pooled["xla"], pooled["cudnn"]
        res["cudnn_vs_xla_cos_min"] = float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                                                   / np.linalg.norm(b, axis=1)))
    del params
    jax.clear_caches()

    device = torch_device()
    config = transformers.AutoConfig.for_model(**hf)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ids_t = torch.as_tensor(ids, device=device, dtype=torch.long)
    with torch.no_grad():
        user = lambda: model(input_ids=ids_t, output_hidden_states=True).hidden_states[n_run][:, -1]  # noqa: E731
        res["torch_user_tokens_per_s"] = tokens / timed(user, steps, torch_sync)
        print(f"  torch user-style: {res['torch_user_tokens_per_s']:,.0f} tokens/s", flush=True)
        base = model.model
        base.layers = base.layers[:n_run]  # equal work: the blocks up to the layer, no LM head
        equal = lambda: base(input_ids=ids_t).last_hidden_state[:, -1]  # noqa: E731
        res["torch_equal_tokens_per_s"] = tokens / timed(equal, steps, torch_sync)
    del model, base
    if device == "cuda":
        torch.cuda.empty_cache()

    block = block_flops_per_token(cfg, seq, causal=False)  # causal half not discounted
    per_token = n_run * block  # the work of the blocks up to the layer
    full_per_token = cfg.n_layers * block + 2 * cfg.vocab_size * cfg.d_model
    best = max((i for i in impls if f"stf_{i}_tokens_per_s" in res), key=lambda i: res[f"stf_{i}_tokens_per_s"])
    res["stf_best"] = best
    for key, work in (("stf_xla", per_token), ("stf_cudnn", per_token), ("torch_equal", per_token),
                      ("torch_user", full_per_token)):
        if f"{key}_tokens_per_s" in res:
            tflops = res[f"{key}_tokens_per_s"] * work / 1e12
            res[f"{key}_tflops"] = tflops
            if peak_tflops:
                res[f"{key}_mfu_measured_peak"] = tflops / peak_tflops
            if datasheet_tflops:
                res[f"{key}_mfu_datasheet"] = tflops / datasheet_tflops
    res["ratio_vs_torch_user"] = res[f"stf_{best}_tokens_per_s"] / res["torch_user_tokens_per_s"]
    res["ratio_vs_torch_equal"] = res[f"stf_{best}_tokens_per_s"] / res["torch_equal_tokens_per_s"]
    return res


def cpu_flags() -> str:
    """The CPU's model name and its vector extensions (AVX*, AMX) from /proc/cpuinfo: the benchmarks print it,
    because timings and kernels depend on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = sorted({f for f in flags if f.startswith(("avx", "amx"))})
    return f"{name}, {os.cpu_count()} cores; {' '.join(vector) or 'no AVX'}"
