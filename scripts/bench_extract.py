"""Extraction throughput: stf_jax vs the strongest honest PyTorch references, same pairs, model, layer, batch.

    python scripts/bench_extract.py --model smollm2-135m --pairs 1000 --layer -6 --batch-size 32

Each run measures, on the same texts and in the same process:
(0) the machine's limit: a 2048^3 matmul in f32 and bf16 through JAX and PyTorch (and MKL's bf16 GEMM when
    MKL is installed), and how XLA compiles a bf16 dot here (native, or converted to f32 around an f32 dot);
(a) stf_jax.extract.extract_pairs as a user runs it (packed rows, stops at the layer, no LM head) in each of
    --dtypes, twice: the first run compiles every program (into the bench's own persistent cache, empty at
    the start), the second starts fresh with that cache warm, as every later run on the machine does; with
    achieved GFLOP/s (real tokens) and the fraction of the same-dtype matmul peak; the bf16/f32
    throughput ratio and the minimum cosine between a pair vector in bf16 and in f32. Where bf16 dense
    layers go to MKL (`stf_jax.models.cpu_gemm`), bf16 also runs on XLA's dots, for the ratio;
(b) PyTorch as a user writes it: transformers' model (same weights, from stf_jax's converted directory),
    dataset order padded to the longest, output_hidden_states=True, every layer and the LM head;
(c) the equal-work PyTorch reference: the same texts in length-sorted batches padded to their longest (the
    careful PyTorch practice; 95 % of its tokens are real on the shipped pairs), the decoder cut after the layer (no later blocks, no LM head), inference_mode, all threads; (b) and (c) in f32, and
    in bf16 too on a CPU with bf16 hardware (avx512_bf16 / amx_bf16), the fastest a PyTorch user runs there;
(d) llama.cpp as a peer (`llama-bench`, built from the source vendored in the llama-cpp-python sdist):
    prompt processing of the same GGUF at the texts' mean length, all threads; skipped cleanly when the
    binary cannot be built.
Model loading is not counted on any side. The closing ratios take stf_jax's second run.
`--repeats N` then alternates N more warm stf_jax f32 runs with N PyTorch f32 equal-work runs and prints
the median of the N ratios: on a machine whose speed drifts from minute to minute, runs close in time compare.

Accelerator mode (`--shape llama-3-8b-instruct`): scripts/accelerator_check.py's extraction section (random
bf16 weights at a registry shape; stf_jax with each attention implementation vs PyTorch sdpa user-style and
equal-work, MFU). `--shape ... --tiny` shrinks the shape so the mode runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def torch_reference(model_dir: str, texts: list[str], layer: int, batch_size: int, tokenizer, equal_work: bool,
                    dtype: str = "float32"):
    """(pooled last-token states [N, D] in text order, real tokens, seconds).

    equal_work=False: as a user writes it (dataset order, output_hidden_states, every layer + LM head).
    equal_work=True: length-sorted batches padded to their longest, blocks after the layer removed, no LM
    head: the same work stf_jax does. dtype: the weights' and activations' dtype (bfloat16: what a PyTorch
    user runs on a CPU with bf16 hardware, where oneDNN multiplies bf16 natively)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    tokenizer.padding_side = "right"
    order = list(range(len(texts)))
    if equal_work:
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        order.sort(key=lambda i: lengths[i])
        model.model.layers = model.model.layers[:layer]
        model.model.norm = torch.nn.Identity()  # hidden_states[layer] is the block output, before the final norm
    pooled, tokens = np.zeros((len(texts), model.config.hidden_size), np.float32), 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")
            if equal_work:
                h = model.model(**enc).last_hidden_state
            else:
                h = model(**enc, output_hidden_states=True).hidden_states[layer]
            last = enc["attention_mask"].sum(1) - 1
            pooled[rows] = h[torch.arange(h.shape[0]), last].float().numpy()
            tokens += int(enc["attention_mask"].sum())
    return pooled, tokens, time.perf_counter() - t0


def llama_cpp_peer(gguf: str, mean_len: int, batch_tokens: int) -> str:
    """llama-bench prompt processing on the GGUF (all threads); a one-line reason when unavailable."""
    try:
        from stf_jax.bench.llamacpp import tool

        bench = tool("llama-bench")
    except Exception as e:  # noqa: BLE001 - the peer is optional
        return f"skipped ({type(e).__name__}: {str(e)[:120]})"
    got = subprocess.run([str(bench), "-m", gguf, "-p", str(mean_len), "-n", "0", "-b", str(batch_tokens),
                          "-t", str(os.cpu_count()), "-r", "3", "-o", "json"], capture_output=True, text=True)
    if got.returncode != 0:
        return f"skipped (llama-bench failed: {got.stderr.strip()[-200:]})"
    row = json.loads(got.stdout)[0]
    return f"{row['avg_ts']:,.0f} tokens/s (pp{mean_len}, {row['n_threads']} threads, {row.get('type_k', '')} cache)"


def stf_extract(model_name: str, pairs, layer: int, batch_size: int, dtype: str, gemm: str = "auto",
                pack_length: int | None = None, runs: int = 2):
    """Two runs of extract_pairs on a loaded model, as a user runs it (default chunking and packing), the
    first with every program compiled (the bench's persistent cache starts empty), the second in a fresh
    state with the cache warm (what a later run on this machine pays: `jax.clear_caches()` drops the
    in-process programs, so each is read back from disk). -> (pair vectors, positive, negative states of
    the second run; real tokens; first-run seconds; second-run seconds; padding efficiency). Model loading
    is not counted. gemm: STF_JAX_CPU_GEMM for these runs ("xla": bf16 dense layers on XLA's dots, not MKL's)."""
    import jax

    import stf_jax
    from stf_jax.extract import ExtractOptions, extract_pairs, forward, load_layer

    os.environ["STF_JAX_CPU_GEMM"] = gemm
    model = stf_jax.load_model(model_name, dtype=dtype, progress=False)
    extra = {} if pack_length is None else {"pack_length": pack_length}
    opts = ExtractOptions(layers=str(layer), batch_size=batch_size, progress=False, dtype=dtype, **extra)
    seconds, arrays, summary = [], None, None
    for _ in range(runs):
        jax.clear_caches()  # the route is chosen at trace time; the second run reads the persistent cache
        forward._JITTED.clear()
        out = tempfile.mkdtemp(prefix="bench_extract_")
        t0 = time.perf_counter()
        summary = extract_pairs([model], pairs, out, opts)[0]
        seconds.append(time.perf_counter() - t0)
        arrays = load_layer(out, model.name, layer)
    return arrays, summary.real_tokens, seconds[0], seconds[-1], summary.padding_efficiency


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=1000, help="number of shipped contrast pairs [1000]")
    parser.add_argument("--layer", type=int, default=-6, help="hidden-state index [-6]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="stf_jax extraction dtypes [float32 bfloat16]")
    parser.add_argument("--torch", nargs="*", default=["equal", "user"], choices=["equal", "user"],
                        help="PyTorch references to time ('--torch' alone: none) [equal user]")
    parser.add_argument("--pack-length", type=int, help="stf_jax's packed row length (0: no packing) [the default]")
    parser.add_argument("--cache-dir", help="persistent compilation cache for stf_jax's runs [a new empty directory]")
    parser.add_argument("--repeats", type=int, default=0,
                        help="then alternate N more warm stf_jax f32 runs with N PyTorch f32 equal-work runs and give "
                             "the median ratio: for machines whose speed drifts between runs [0]")
    parser.add_argument("--skip-llama-cpp", action="store_true", help="no llama.cpp peer")
    parser.add_argument("--shape", help="accelerator mode: a registry model shape with random bf16 weights")
    parser.add_argument("--tiny", action="store_true", help="accelerator mode: shrink the shape (CPU smoke run)")
    parser.add_argument("--seq", type=int, default=512, help="accelerator mode: tokens per row [512]")
    parser.add_argument("--steps", type=int, default=10, help="accelerator mode: timed forwards [10]")
    args = parser.parse_args(argv)
    if args.shape:
        from stf_jax.bench.device import extraction_throughput

        res = extraction_throughput(args.shape, args.layer, args.batch_size, args.seq, args.steps, args.tiny)
        for k, v in res.items():
            print(f"{k:32s} {v:,.4g}" if isinstance(v, float) else f"{k:32s} {v}")
        return

    # a persistent compilation cache of the bench's own, empty at the start: stf_jax's first run compiles
    # everything, its second run reads it back (what every later run on this machine pays)
    os.environ["STF_JAX_COMPILE_CACHE"] = args.cache_dir or tempfile.mkdtemp(prefix="bench_extract_xla_")
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    from stf_jax.core import compile_cache
    from stf_jax.core.xla_flags import cpu_defaults

    compile_cache.enable()
    cpu_defaults()  # as `python -m stf_jax.extract` runs (before JAX starts its backend)

    import stf_jax
    from stf_jax.bench.device import block_flops_per_token, matmul_peaks
    from stf_jax.data import load_pairs
    from stf_jax.models.loading import convert_gguf
    from stf_jax.models.registry import registry, resolve

    pairs = load_pairs("shipped")
    if len(pairs) < args.pairs:
        raise SystemExit(f"only {len(pairs)} shipped pairs")
    order = np.random.default_rng(0).permutation(len(pairs))[: args.pairs]  # an even spread over traits
    pairs = [pairs[i] for i in sorted(order)]
    texts = [t for p in pairs for t in (p.positive, p.negative)]
    model = stf_jax.load_model(args.model, progress=False)
    layer = model.resolve_layers([args.layer])[0]
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    mean_len = float(np.mean(lengths))
    flops_tok = layer * block_flops_per_token(model.config, mean_len, causal=True)
    print(f"model {args.model}, pairs {len(pairs)}, texts {len(texts)}, layer {layer}/{model.config.n_layers}, "
          f"batch {args.batch_size}, mean {mean_len:.1f} tokens/text, {flops_tok / 1e6:.0f} MFLOP/token to the layer, "
          f"{os.cpu_count()} CPUs")
    peaks = matmul_peaks(2048, reps=3)
    print("matmul 2048^3: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" if isinstance(v, float) else f"{k}: {v}"
                                        for k, v in peaks.items()), flush=True)

    from stf_jax.models import cpu_gemm

    route = cpu_gemm.mode()
    print(f"bf16 dense layers on this CPU: {route} ({'MKL found' if cpu_gemm._gemm() else 'no MKL'}, "
          f"bf16 hardware {'yes' if cpu_gemm.cpu_has_bf16() else 'no'})")
    runs = [(d, "auto") for d in args.dtypes]
    if "bfloat16" in args.dtypes and route == "mkl":
        runs.append(("bfloat16", "xla"))  # the same bf16 forward on XLA's dots, for the ratio
    rows, ours = [], {}
    for dtype, gemm in runs:
        arrays, tokens, first, second, eff = stf_extract(args.model, pairs, layer, args.batch_size, dtype, gemm,
                                                         args.pack_length)
        name = dtype if dtype == "float32" else f"{dtype}, dense layers on {route if gemm == 'auto' else 'xla'}"
        ours[name] = (arrays, tokens / second)
        peak = max(v for k, v in peaks.items() if k.endswith(dtype) and isinstance(v, float)) / 1e9
        for when, seconds in (("first run, compiles", first), ("second run, cache warm", second)):
            gflops = tokens * flops_tok / seconds / 1e9
            rows.append((f"stf_jax {name}, {when}", tokens, seconds, gflops, gflops / peak,
                         f"padding efficiency {eff:.0%}" + (f"; compile {first - second:.1f} s" if seconds == first else "")))
        print(f"  stf_jax {name}: {tokens / first:,.0f} tokens/s first run, {tokens / second:,.0f} second", flush=True)
    os.environ.pop("STF_JAX_CPU_GEMM", None)
    f32 = ours.get("float32", (None,))[0]
    path = resolve(args.model) if args.model in registry() else args.model
    model_dir = str(convert_gguf(path)) if str(path).endswith(".gguf") else path
    # PyTorch in bf16 too where the CPU multiplies bf16 natively: the fastest thing a PyTorch user runs there
    torch_dtypes = ["float32"] + (["bfloat16"] if cpu_gemm.cpu_has_bf16() else [])
    for kind in args.torch:
        for tdtype in torch_dtypes:
            ref, ref_tokens, ref_seconds = torch_reference(model_dir, texts, layer, args.batch_size, model.tokenizer,
                                                           equal_work=kind == "equal", dtype=tdtype)
            gflops = ref_tokens * flops_tok / ref_seconds / 1e9
            note = "every layer + LM head (counted: the work to the layer)" if kind == "user" else "same work"
            if f32 is not None:
                diff = ref[0::2] - ref[1::2]
                vec = diff / np.linalg.norm(diff, axis=1, keepdims=True)
                note += (f"; max |Δ vector| vs stf_jax f32 {np.abs(f32['vectors'] - vec).max():.1e}, min cosine "
                         f"{_cos_rows(f32['vectors'], vec).min():.5f}")
            peak = max(v for k, v in peaks.items() if k.endswith(tdtype) and isinstance(v, float))
            rows.append((f"PyTorch {tdtype}, {'equal-work' if kind == 'equal' else 'user-style'}", ref_tokens,
                         ref_seconds, gflops, gflops * 1e9 / peak, note))
            print(f"  torch {tdtype} {kind}: {ref_tokens / ref_seconds:,.0f} tokens/s", flush=True)

    print("\n| pipeline | tokens | seconds | tokens/s | GFLOP/s | of matmul peak | note |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for name, tokens, seconds, gflops, frac, note in rows:
        print(f"| {name} | {tokens} | {seconds:.1f} | {tokens / seconds:,.0f} | {gflops:.0f} | {frac:.0%} | {note} |")
    if not args.skip_llama_cpp and str(path).endswith(".gguf"):
        print(f"| llama.cpp llama-bench ({Path(path).name}) | | | "
              f"{llama_cpp_peer(str(path), round(mean_len), args.batch_size * round(mean_len))} | | | peer, full model |")
    for name, (arrays, rate) in ours.items():
        if name != "float32" and "float32" in ours:
            cos = _cos_rows(arrays["vectors"], ours["float32"][0]["vectors"])
            print(f"\nstf_jax {name} / f32 extraction throughput: {rate / ours['float32'][1]:.2f}x; "
                  f"pair-vector cosine to f32: min {cos.min():.5f}, median {np.median(cos):.5f}")
    best_name = max(ours, key=lambda k: ours[k][1])
    for name, tokens, seconds, *_ in rows[2 * len(runs):]:
        rate = tokens / seconds
        print(f"stf_jax {best_name} (the fastest here, second run) / {name}: {ours[best_name][1] / rate:.2f}x"
              + (f"; stf_jax float32 / {name}: {ours['float32'][1] / rate:.2f}x" if "float32" in ours else ""))
    if args.repeats and "float32" in ours and "equal" in args.torch:
        interleaved(args, pairs, layer, model_dir, texts, model.tokenizer)


def interleaved(args, pairs, layer: int, model_dir: str, texts, tokenizer):
    """--repeats: warm stf_jax f32 and PyTorch f32 equal-work runs in turn on the same texts; each pair of runs
    is close in time, so the median of their ratios is robust to a machine whose speed drifts."""
    ratios = []
    for i in range(args.repeats):
        _, tokens, _, seconds, _ = stf_extract(args.model, pairs, layer, args.batch_size, "float32", "auto",
                                               args.pack_length, runs=1)
        _, ref_tokens, ref_seconds = torch_reference(model_dir, texts, layer, args.batch_size, tokenizer,
                                                     equal_work=True, dtype="float32")
        ours, theirs = tokens / seconds, ref_tokens / ref_seconds
        ratios.append(ours / theirs)
        print(f"interleaved {i + 1}/{args.repeats}: stf_jax f32 (cache warm) {ours:,.0f} tokens/s, PyTorch f32 "
              f"equal-work {theirs:,.0f}: {ours / theirs:.2f}x", flush=True)
    print(f"stf_jax float32 / PyTorch float32, equal-work, median of {len(ratios)} interleaved pairs of runs: "
          f"{np.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
