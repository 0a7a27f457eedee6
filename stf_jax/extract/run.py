"""Extraction runs: contrast pairs -> pooled states and steering vectors; corpora -> token states.

Same pairs, same order, for every model (semantic pairing). Work is split into chunks of pairs
(or texts) that are written as they finish, so a killed run resumes where it stopped and ends
with files identical to an uninterrupted run's. With several processes (`jax.distributed`), each
process computes its share of the chunks and process 0 assembles the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from .. import __version__
from ..data import ContrastPair, dataset_hash
from ..models.loading import load_model
from ..models.model import Model
from .batching import make_batches, tokenize
from .forward import PooledForward, make_mesh
from .layers import parse_layer_spec, resolve_layers
from .store import FORMAT_VERSION, RunDir, atomic_save_tensors, model_slug

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExtractOptions:
    layers: Sequence[str | int | float] | str = ("-6",)
    pooling: str = "last"  # last | mean (pairs); corpus runs always store tokens
    dtype: str | None = None  # None: float32 on CPU, bfloat16 on accelerators
    batch_size: int = 32  # rows per forward (rounded up to a multiple of the data-parallel size)
    chunk_size: int = 256  # pairs (or texts) per resumable chunk
    max_length: int | None = None  # default: the model's context
    truncate: bool = True
    chat_template: bool = False
    model_parallel: int = 1
    max_tokens_per_text: int | None = None  # corpus mode: cap with deterministic subsampling
    seed: int = 0
    overwrite: bool = False
    progress: bool = True


@dataclasses.dataclass
class ModelSummary:
    name: str
    texts: int
    real_tokens: int
    computed_tokens: int
    seconds: float
    truncated: int
    out_dir: str

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / max(self.computed_tokens, 1)

    def line(self) -> str:
        rate = self.real_tokens / max(self.seconds, 1e-9)
        return (f"{self.name}: {self.texts} texts, {self.real_tokens} tokens, padding efficiency "
                f"{self.padding_efficiency:.1%}, {rate:,.0f} tokens/s, {self.seconds:.1f}s, "
                f"truncated {self.truncated} -> {self.out_dir}")


def default_dtype() -> str:
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _versions() -> dict[str, str]:
    import flax
    import tokenizers
    import transformers

    return {"stf_jax": __version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0]}


def _wrap_chat(model: Model, text: str, prompt: str | None) -> str:
    messages = ([{"role": "user", "content": prompt}, {"role": "assistant", "content": text}] if prompt
                else [{"role": "user", "content": text}])
    if not getattr(model.tokenizer, "chat_template", None):
        raise ValueError(f"{model.name} has no chat template; drop --chat-template")
    return model.tokenizer.apply_chat_template(messages, tokenize=False)


def _texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


class _Job:
    """Per-model machinery shared by the pair and corpus modes."""

    def __init__(self, model: Model, layers: tuple[int, ...], pooling: str, opts: ExtractOptions):
        self.model = model
        self.layers = layers
        mesh = make_mesh(opts.model_parallel)
        self.forward = PooledForward(model, layers, pooling, mesh)
        data = self.forward.data_size
        self.batch_size = -(-opts.batch_size // data) * data
        self.max_length = min(opts.max_length or model.config.max_position_embeddings,
                              model.config.max_position_embeddings)
        tok = model.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def run_batches(self, tokenized, indices, on_result, bar) -> tuple[int, int]:
        """Dispatch every batch (async), hand each finished one to on_result(rows, host_array)."""
        real = computed = 0
        pending = None
        for batch in make_batches(tokenized, indices, self.batch_size, self.max_length, self.pad_id,
                                  row_multiple=self.forward.data_size):
            out = self.forward(batch.input_ids, batch.attention_mask)  # dispatched; runs while we continue
            if pending is not None:
                self._finish(pending, on_result, bar)
            pending = (batch, out)
            real += batch.real_tokens
            computed += batch.computed_tokens
        if pending is not None:
            self._finish(pending, on_result, bar)
        return real, computed

    @staticmethod
    def _finish(pending, on_result, bar):
        batch, out = pending
        host = np.asarray(out)  # [n_layers, B, D] (or [n_layers, B, S, D])
        keep = batch.rows >= 0
        on_result(batch, host, keep)
        if bar is not None:
            bar.update(int(keep.sum()))
            bar.tokens += batch.real_tokens
            elapsed = max(time.perf_counter() - bar.t0, 1e-9)
            rate = f"{bar.n / 2 / elapsed:,.1f} pairs/s, " if bar.unit == "text" and bar.pairs else ""
            bar.set_postfix_str(f"{rate}{bar.tokens / elapsed:,.0f} tok/s", refresh=False)


def _progress(total: int, desc: str, enabled: bool, pairs: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="text", dynamic_ncols=True, leave=True)
    bar.tokens, bar.t0, bar.pairs = 0, time.perf_counter(), pairs
    return bar


def _process_info() -> tuple[int, int]:
    return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _run_args(kind: str, models: Sequence[str], source: dict, opts: ExtractOptions, dtype: str) -> dict:
    return {
        "kind": kind, "models": list(models), "source": source,
        "layers": list(parse_layer_spec(opts.layers)), "pooling": opts.pooling if kind == "pairs" else "tokens",
        "dtype": dtype, "batch_size": opts.batch_size, "chunk_size": opts.chunk_size,
        "max_length": opts.max_length, "truncate": opts.truncate, "chat_template": opts.chat_template,
        "model_parallel": opts.model_parallel, "max_tokens_per_text": opts.max_tokens_per_text, "seed": opts.seed,
    }


def extract_pairs(models: Sequence[str], pairs: Sequence[ContrastPair], out_dir: str | Path,
                  opts: ExtractOptions | None = None, dataset_name: str = "custom") -> list[ModelSummary]:
    """Pooled positive/negative states, raw differences and unit steering vectors for every pair."""
    opts = opts or ExtractOptions()
    if not pairs:
        raise ValueError("no contrast pairs to extract")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate pair ids: every pair needs a unique id")
    dtype = opts.dtype or default_dtype()
    d_hash = dataset_hash(pairs)
    run = RunDir(out_dir)
    pid, nproc = _process_info()
    args = _run_args("pairs", models, {"dataset": dataset_name, "hash": d_hash, "n_pairs": len(pairs)}, opts, dtype)
    if run.prepare(args, opts.overwrite, is_writer=pid == 0):
        print(f"{out_dir}: already complete (manifest.json present); nothing to do")
        return []
    _barrier("prepared")

    summaries, entries = [], []
    tokens = parse_layer_spec(opts.layers)
    n_chunks = -(-len(pairs) // opts.chunk_size)
    for name in models:
        model = load_model(name, dtype=dtype, progress=opts.progress)
        layers = resolve_layers(tokens, model.config.n_layers)
        slug = model_slug(name)
        texts, pos_idx, neg_idx = [], [], []
        seen: dict[str, int] = {}
        for p in pairs:
            for side, idx_list in ((p.positive, pos_idx), (p.negative, neg_idx)):
                text = _wrap_chat(model, side, p.prompt or None) if opts.chat_template else side
                if text not in seen:
                    seen[text] = len(texts)
                    texts.append(text)
                idx_list.append(seen[text])
        job = _Job(model, layers, opts.pooling, opts)
        tokenized = tokenize(model.tokenizer, texts, job.max_length, opts.truncate)
        mine = [c for c in range(n_chunks) if c % nproc == pid and not run.chunk_path(slug, c).exists()]
        t0 = time.perf_counter()
        real = computed = 0
        bar = _progress(sum(2 * len(range(c * opts.chunk_size, min((c + 1) * opts.chunk_size, len(pairs))))
                            for c in mine), f"{name}", opts.progress, pairs=True)
        with ThreadPoolExecutor(1) as writer:
            for c in mine:
                lo, hi = c * opts.chunk_size, min((c + 1) * opts.chunk_size, len(pairs))
                need = sorted(set(pos_idx[lo:hi]) | set(neg_idx[lo:hi]))
                pooled: dict[int, np.ndarray] = {}

                def keep(batch, host, mask, pooled=pooled):
                    for r in np.nonzero(mask)[0]:
                        pooled[int(batch.rows[r])] = host[:, r]

                r_, c_ = job.run_batches(tokenized, need, keep, bar)
                real, computed = real + r_, computed + c_
                pos = np.stack([pooled[i] for i in pos_idx[lo:hi]], axis=1)  # [n_layers, n, D]
                neg = np.stack([pooled[i] for i in neg_idx[lo:hi]], axis=1)
                writer.submit(atomic_save_tensors, run.chunk_path(slug, c), {"positive": pos, "negative": neg})
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        _barrier(f"chunks-{slug}")
        files = {}
        if pid == 0:
            files = _assemble_pairs(run, slug, layers, n_chunks)
        summary = ModelSummary(name, sum(2 * (min((c + 1) * opts.chunk_size, len(pairs)) - c * opts.chunk_size)
                                         for c in mine), real, computed, seconds, tokenized.truncated,
                               str(Path(out_dir) / slug))
        summaries.append(summary)
        print(summary.line(), flush=True)
        entries.append(_model_entry(name, slug, model, dtype, layers, files, summary))
        del model, job

    if pid == 0:
        run.finish({
            "format_version": FORMAT_VERSION, "kind": "pairs", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "models": entries, "layers_requested": list(tokens), "pooling": opts.pooling,
            "chat_template": opts.chat_template,
            "dataset": {"name": dataset_name, "hash": d_hash, "n_pairs": len(pairs)},
            "pair_ids": ids, "traits": [p.trait for p in pairs],
            "splits": [p.split for p in pairs] if any(p.split for p in pairs) else None,
            "arrays": {"positive": "pooled state of the positive text [n_pairs, d_model]",
                       "negative": "pooled state of the negative text [n_pairs, d_model]",
                       "diff": "positive - negative [n_pairs, d_model]",
                       "vectors": "diff / |diff|, the steering vector [n_pairs, d_model]"},
            "versions": _versions(),
        })
    _barrier("finished")
    return summaries


def _model_entry(name, slug, model: Model, dtype, layers, files, summary: ModelSummary) -> dict[str, Any]:
    cfg = model.config
    return {"name": name, "slug": slug, "family": cfg.family, "config_hash": cfg.config_hash, "dtype": dtype,
            "n_layers": cfg.n_layers, "d_model": cfg.d_model, "layers": list(layers), "files": files,
            "real_tokens": summary.real_tokens, "computed_tokens": summary.computed_tokens,
            "padding_efficiency": round(summary.padding_efficiency, 4), "truncated": summary.truncated}


def _assemble_pairs(run: RunDir, slug: str, layers: tuple[int, ...], n_chunks: int) -> dict[str, str]:
    chunks = [run.load_chunk(slug, c) for c in range(n_chunks)]
    pos = np.concatenate([c["positive"] for c in chunks], axis=1)  # [n_layers, n_pairs, D]
    neg = np.concatenate([c["negative"] for c in chunks], axis=1)
    files = {}
    for j, layer in enumerate(layers):
        diff = pos[j] - neg[j]
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        vectors = diff / np.maximum(norm, np.finfo(np.float32).tiny)
        path = run.layer_path(slug, layer)
        atomic_save_tensors(path, {"positive": pos[j], "negative": neg[j], "diff": diff, "vectors": vectors},
                            metadata={"layer": str(layer), "convention": "hf_hidden_states"})
        files[str(layer)] = str(path.relative_to(run.root))
    return files


def extract_corpus(models: Sequence[str], texts: Sequence[str], out_dir: str | Path,
                   opts: ExtractOptions | None = None, corpus_name: str = "corpus") -> list[ModelSummary]:
    """Every real token's hidden state (optionally capped per text) for a plain-text corpus."""
    opts = opts or ExtractOptions()
    if not texts:
        raise ValueError("the corpus has no texts")
    dtype = opts.dtype or default_dtype()
    run = RunDir(out_dir)
    pid, nproc = _process_info()
    source = {"corpus": corpus_name, "hash": _texts_hash(texts), "n_texts": len(texts)}
    if run.prepare(_run_args("corpus", models, source, opts, dtype), opts.overwrite, is_writer=pid == 0):
        print(f"{out_dir}: already complete (manifest.json present); nothing to do")
        return []
    _barrier("prepared")
    tokens_spec = parse_layer_spec(opts.layers)
    n_chunks = -(-len(texts) // opts.chunk_size)
    summaries, entries = [], []
    for name in models:
        model = load_model(name, dtype=dtype, progress=opts.progress)
        layers = resolve_layers(tokens_spec, model.config.n_layers)
        slug = model_slug(name)
        wrapped = [_wrap_chat(model, t, None) for t in texts] if opts.chat_template else list(texts)
        job = _Job(model, layers, "tokens", opts)
        tokenized = tokenize(model.tokenizer, wrapped, job.max_length, opts.truncate)
        mine = [c for c in range(n_chunks) if c % nproc == pid and not run.chunk_path(slug, c).exists()]
        bar = _progress(sum(min((c + 1) * opts.chunk_size, len(texts)) - c * opts.chunk_size for c in mine),
                        name, opts.progress, pairs=False)
        t0 = time.perf_counter()
        real = computed = 0
        for c in mine:
            lo, hi = c * opts.chunk_size, min((c + 1) * opts.chunk_size, len(texts))
            per_text: dict[int, tuple[np.ndarray, np.ndarray]] = {}

            def keep(batch, host, mask, per_text=per_text):
                for r in np.nonzero(mask)[0]:
                    t = int(batch.rows[r])
                    n = int(batch.attention_mask[r].sum())
                    positions = np.arange(n)
                    if opts.max_tokens_per_text and n > opts.max_tokens_per_text:
                        rng = np.random.default_rng([opts.seed, t])
                        positions = np.sort(rng.choice(n, opts.max_tokens_per_text, replace=False))
                    per_text[t] = (host[:, r, positions], positions)

            r_, c_ = job.run_batches(tokenized, range(lo, hi), keep, bar)
            real, computed = real + r_, computed + c_
            order = range(lo, hi)
            states = np.concatenate([per_text[t][0] for t in order], axis=1)  # [n_layers, n_tok, D]
            text_index = np.concatenate([np.full(len(per_text[t][1]), t, np.int64) for t in order])
            token_index = np.concatenate([per_text[t][1].astype(np.int64) for t in order])
            atomic_save_tensors(run.chunk_path(slug, c), {"states": states, "text_index": text_index,
                                                          "token_index": token_index})
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        _barrier(f"chunks-{slug}")
        files = {}
        if pid == 0:
            chunks = [run.load_chunk(slug, c) for c in range(n_chunks)]
            states = np.concatenate([ch["states"] for ch in chunks], axis=1)
            text_index = np.concatenate([ch["text_index"] for ch in chunks])
            token_index = np.concatenate([ch["token_index"] for ch in chunks])
            for j, layer in enumerate(layers):
                path = run.layer_path(slug, layer, kind="tokens_layer")
                atomic_save_tensors(path, {"states": states[j], "text_index": text_index, "token_index": token_index},
                                    metadata={"layer": str(layer), "convention": "hf_hidden_states"})
                files[str(layer)] = str(path.relative_to(run.root))
        summary = ModelSummary(name, sum(min((c + 1) * opts.chunk_size, len(texts)) - c * opts.chunk_size
                                         for c in mine), real, computed, seconds, tokenized.truncated,
                               str(Path(out_dir) / slug))
        summaries.append(summary)
        print(summary.line(), flush=True)
        entries.append(_model_entry(name, slug, model, dtype, layers, files, summary))
        del model, job
    if pid == 0:
        run.finish({
            "format_version": FORMAT_VERSION, "kind": "corpus", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "models": entries, "layers_requested": list(tokens_spec), "pooling": "tokens",
            "chat_template": opts.chat_template, "corpus": source,
            "max_tokens_per_text": opts.max_tokens_per_text, "seed": opts.seed,
            "arrays": {"states": "hidden state of each kept token [n_tokens, d_model]",
                       "text_index": "index of the token's text in the corpus [n_tokens]",
                       "token_index": "position of the token in its tokenized text [n_tokens]"},
            "versions": _versions(),
        })
    _barrier("finished")
    return summaries
