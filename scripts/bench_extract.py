"""Extraction throughput: stf_jax vs the PyTorch reference pipeline, same pairs, model, layer, batch.

    python scripts/bench_extract.py --model smollm2-135m --pairs 1000 --layer -6 --batch-size 32

(a) PyTorch as a user would write it: transformers' model (the same weights, from stf_jax's
    converted directory), batches in dataset order padded to the longest, output_hidden_states=True,
    torch.no_grad, all threads; last-token state at the layer.
(b) stf_jax.extract.extract_pairs (bucketed, stops at the layer, no LM head), compile time included.
Prints tokens/s of both, the ratio, and the max relative difference of the steering vectors.
Model loading is not counted on either side.

Accelerator mode (`--shape llama-3-8b-instruct`): a registry model's shape with random bf16 weights,
random token batches of --seq tokens, stf_jax (jit, last-token state at the layer) vs PyTorch bf16
with sdpa attention (`output_hidden_states=True`) on the same device; prints tokens/s, the ratio and
model FLOP utilisation = (2 * params * tokens + attention FLOPs) / time / --peak-tflops.
`--shape ... --tiny` shrinks the shape so the mode can be exercised on a CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def torch_reference(model_dir: str, texts: list[str], layer: int, batch_size: int, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer.padding_side = "right"
    pooled, tokens = [], 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            h = out.hidden_states[layer]
            last = enc["attention_mask"].sum(1) - 1
            pooled.append(h[torch.arange(h.shape[0]), last].float().numpy())
            tokens += int(enc["attention_mask"].sum())
    return np.concatenate(pooled), tokens, time.perf_counter() - t0


def shape_benchmark(name: str, layer: int, batch: int, seq: int, steps: int, peak_tflops: float, tiny: bool):
    """Random-weight throughput and MFU for a registry shape, stf_jax vs PyTorch, same device."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from stf_jax.models.config import config_from_hf
    from stf_jax.models.decoder import hidden_states, param_shapes
    from stf_jax.models.registry import entry

    hf = dict(entry(name)["config"])
    if tiny:
        hf |= {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096}
    cfg = config_from_hf(hf, name)
    layers = (cfg.resolve_layers([layer])[0],)
    n_run = layers[0]
    shapes = param_shapes(cfg, jnp.bfloat16)
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    params = tree.unflatten([(0.02 * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype)
                             for k, x in zip(keys, leaves)])
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    ids_j, mask_j = jax.device_put(ids), jax.device_put(mask)

    def pool(h, m):
        return h[:, -1].astype(jnp.float32)

    fn = jax.jit(lambda p, i, m: hidden_states(p, i, m, cfg=cfg, layers=layers, dtype=jnp.bfloat16, collect=pool))
    jax.block_until_ready(fn(params, ids_j, mask_j))  # compile
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn(params, ids_j, mask_j)
    jax.block_until_ready(out)
    jax_s = (time.perf_counter() - t0) / steps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = transformers.AutoConfig.for_model(**hf)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ids_t = torch.as_tensor(ids, device=device, dtype=torch.long)
    with torch.no_grad():
        model(input_ids=ids_t, output_hidden_states=True)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            out_t = model(input_ids=ids_t, output_hidden_states=True).hidden_states[layers[0]][:, -1]
        if device == "cuda":
            torch.cuda.synchronize()
        torch_s = (time.perf_counter() - t0) / steps

    tokens = batch * seq
    block_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree_util.tree_leaves(shapes["layers"]))
    attn = 2 * 2 * batch * seq * seq * cfg.n_heads * cfg.head_dim  # QK^T and PV, causal not discounted
    flops = n_run * (2 * block_params * tokens + attn)  # stf_jax's work: the blocks up to the layer
    full = cfg.n_layers * (2 * block_params * tokens + attn) + 2 * cfg.vocab_size * cfg.d_model * tokens
    print(f"shape {name}{' (tiny)' if tiny else ''}, layer {layers[0]}/{cfg.n_layers}, batch {batch} x seq {seq}, "
          f"bf16, device {jax.devices()[0].device_kind} / torch {device}")
    print(f"stf_jax : {tokens / jax_s:,.0f} tokens/s, MFU {flops / jax_s / (peak_tflops * 1e12):.1%}")
    print(f"pytorch : {tokens / torch_s:,.0f} tokens/s, MFU {full / torch_s / (peak_tflops * 1e12):.1%} "
          "(all layers + LM head, as output_hidden_states computes them)")
    print(f"ratio   : stf_jax / pytorch = {torch_s / jax_s:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=1000, help="number of shipped contrast pairs [1000]")
    parser.add_argument("--layer", type=int, default=-6, help="hidden-state index [-6]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-torch", action="store_true", help="time stf_jax only")
    parser.add_argument("--shape", help="accelerator mode: a registry model shape with random bf16 weights")
    parser.add_argument("--tiny", action="store_true", help="accelerator mode: shrink the shape (CPU smoke run)")
    parser.add_argument("--seq", type=int, default=512, help="accelerator mode: tokens per row [512]")
    parser.add_argument("--steps", type=int, default=10, help="accelerator mode: timed forwards [10]")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="accelerator mode: dense bf16 peak for MFU [989, H100/H200 SXM]")
    args = parser.parse_args()
    if args.shape:
        return shape_benchmark(args.shape, args.layer, args.batch_size, args.seq, args.steps, args.peak_tflops,
                               args.tiny)

    import stf_jax
    from stf_jax.data import load_pairs
    from stf_jax.extract import ExtractOptions, extract_pairs
    from stf_jax.models.loading import convert_gguf
    from stf_jax.models.registry import registry, resolve

    pairs = load_pairs("shipped")
    if len(pairs) < args.pairs:
        raise SystemExit(f"only {len(pairs)} shipped pairs")
    # an even spread over traits, deterministic
    order = np.random.default_rng(0).permutation(len(pairs))[: args.pairs]
    pairs = [pairs[i] for i in sorted(order)]
    texts = [t for p in pairs for t in (p.positive, p.negative)]

    model = stf_jax.load_model(args.model, progress=False)
    layer = model.resolve_layers([args.layer])[0]
    out = tempfile.mkdtemp(prefix="bench_extract_")
    opts = ExtractOptions(layers=str(layer), batch_size=args.batch_size, chunk_size=len(pairs), progress=False)
    t0 = time.perf_counter()
    summary = extract_pairs([args.model], pairs, out, opts)[0]
    wall = time.perf_counter() - t0
    t_load = time.perf_counter()
    stf_jax.load_model(args.model, progress=False)
    load_seconds = time.perf_counter() - t_load
    # everything but the (cached) model load: tokenization, compilation, forwards, writing files
    jax_seconds = wall - load_seconds
    from stf_jax.extract import load_layer

    arrays = load_layer(out, args.model, layer)
    jax_tokens = summary.real_tokens
    print(f"pairs {len(pairs)}, texts {len(texts)}, layer {layer}, batch {args.batch_size}, model {args.model}")
    print(f"stf_jax : {jax_tokens} tokens in {jax_seconds:.1f}s (tokenize + compile + forward + write) = "
          f"{jax_tokens / jax_seconds:,.0f} tokens/s, padding efficiency {summary.padding_efficiency:.1%} "
          f"(model load {load_seconds:.1f}s not counted)")
    if args.skip_torch:
        return
    path = resolve(args.model) if args.model in registry() else args.model
    model_dir = str(convert_gguf(path)) if str(path).endswith(".gguf") else path
    ref, ref_tokens, ref_seconds = torch_reference(model_dir, texts, layer, args.batch_size, model.tokenizer)
    assert ref_tokens == jax_tokens, (ref_tokens, jax_tokens)
    print(f"pytorch : {ref_tokens} tokens in {ref_seconds:.1f}s = {ref_tokens / ref_seconds:,.0f} tokens/s")
    print(f"ratio   : stf_jax / pytorch = {(jax_tokens / jax_seconds) / (ref_tokens / ref_seconds):.2f}x")
    pos, neg = ref[0::2], ref[1::2]
    diff = pos - neg
    vectors = diff / np.linalg.norm(diff, axis=1, keepdims=True)
    rel = np.abs(arrays["vectors"] - vectors).max() / np.abs(vectors).max()
    rel_states = max(np.abs(arrays["positive"] - pos).max(), np.abs(arrays["negative"] - neg).max()) / np.abs(pos).max()
    print(f"equal   : max relative difference vectors {rel:.2e}, pooled states {rel_states:.2e}")


if __name__ == "__main__":
    main()
