"""Extraction throughput: stf_jax vs the PyTorch reference pipeline, same pairs, model, layer, batch.

    python scripts/bench_extract.py --model smollm2-135m --pairs 1000 --layer -6 --batch-size 32

(a) PyTorch as a user would write it: transformers' model (the same weights, from stf_jax's
    converted directory), batches in dataset order padded to the longest, output_hidden_states=True,
    torch.no_grad, all threads; last-token state at the layer.
(b) stf_jax.extract.extract_pairs (bucketed, stops at the layer, no LM head), compile time included.
Prints tokens/s of both, the ratio, and the max relative difference of the steering vectors.
Model loading is not counted on either side.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=1000, help="number of shipped contrast pairs [1000]")
    parser.add_argument("--layer", type=int, default=-6, help="hidden-state index [-6]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-torch", action="store_true", help="time stf_jax only")
    args = parser.parse_args()

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
