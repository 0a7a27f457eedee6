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


class _PairsMode:
    """Pooled states of both sides of every pair -> positive, negative, diff, unit vectors."""

    kind, file_kind = "pairs", "layer"

    def __init__(self, pairs: Sequence[ContrastPair], pooling: str, chat_template: bool):
        self.pairs, self.pooling, self.chat_template = pairs, pooling, chat_template
        self.n_items = len(pairs)

    def texts(self, model: Model) -> list[str]:
        """Unique texts (a text shared by pairs is computed once); remembers each pair's two."""
        texts, seen, self.pos_idx, self.neg_idx = [], {}, [], []
        for p in self.pairs:
            for side, idx in ((p.positive, self.pos_idx), (p.negative, self.neg_idx)):
                text = _wrap_chat(model, side, p.prompt or None) if self.chat_template else side
                if text not in seen:
                    seen[text] = len(texts)
                    texts.append(text)
                idx.append(seen[text])
        return texts

    def needed(self, lo: int, hi: int) -> list[int]:
        return sorted(set(self.pos_idx[lo:hi]) | set(self.neg_idx[lo:hi]))

    def row_result(self, text: int, states: np.ndarray, n_real: int) -> np.ndarray:
        return states  # [n_layers, D] pooled inside the jitted forward

    def chunk_tensors(self, lo: int, hi: int, results: dict) -> dict[str, np.ndarray]:
        return {"positive": np.stack([results[i] for i in self.pos_idx[lo:hi]], axis=1),  # [n_layers, n, D]
                "negative": np.stack([results[i] for i in self.neg_idx[lo:hi]], axis=1)}

    def layer_tensors(self, chunks: list[dict], j: int) -> dict[str, np.ndarray]:
        pos = np.concatenate([c["positive"][j] for c in chunks])
        neg = np.concatenate([c["negative"][j] for c in chunks])
        diff = pos - neg
        vectors = diff / np.maximum(np.linalg.norm(diff, axis=-1, keepdims=True), np.finfo(np.float32).tiny)
        return {"positive": pos, "negative": neg, "diff": diff, "vectors": vectors}

    def manifest(self) -> dict[str, Any]:
        return {"pair_ids": [p.id for p in self.pairs], "traits": [p.trait for p in self.pairs],
                "splits": [p.split for p in self.pairs] if any(p.split for p in self.pairs) else None,
                "arrays": {"positive": "pooled state of the positive text [n_pairs, d_model]",
                           "negative": "pooled state of the negative text [n_pairs, d_model]",
                           "diff": "positive - negative [n_pairs, d_model]",
                           "vectors": "diff / |diff|, the steering vector [n_pairs, d_model]"}}


class _CorpusMode:
    """Every real token's state (optionally a deterministic subsample per text)."""

    kind, pooling, file_kind = "corpus", "tokens", "tokens_layer"

    def __init__(self, texts: Sequence[str], chat_template: bool, cap: int | None, seed: int):
        self.raw, self.chat_template, self.cap, self.seed = list(texts), chat_template, cap, seed
        self.n_items = len(texts)

    def texts(self, model: Model) -> list[str]:
        return [_wrap_chat(model, t, None) for t in self.raw] if self.chat_template else self.raw

    def needed(self, lo: int, hi: int) -> list[int]:
        return list(range(lo, hi))

    def row_result(self, text: int, states: np.ndarray, n_real: int):
        positions = np.arange(n_real)
        if self.cap and n_real > self.cap:
            positions = np.sort(np.random.default_rng([self.seed, text]).choice(n_real, self.cap, replace=False))
        return states[:, positions], positions  # [n_layers, n_kept, D]

    def chunk_tensors(self, lo: int, hi: int, results: dict) -> dict[str, np.ndarray]:
        order = range(lo, hi)
        return {"states": np.concatenate([results[t][0] for t in order], axis=1),
                "text_index": np.concatenate([np.full(len(results[t][1]), t, np.int64) for t in order]),
                "token_index": np.concatenate([results[t][1].astype(np.int64) for t in order])}

    def layer_tensors(self, chunks: list[dict], j: int) -> dict[str, np.ndarray]:
        return {"states": np.concatenate([c["states"][j] for c in chunks]),
                "text_index": np.concatenate([c["text_index"] for c in chunks]),
                "token_index": np.concatenate([c["token_index"] for c in chunks])}

    def manifest(self) -> dict[str, Any]:
        return {"max_tokens_per_text": self.cap, "seed": self.seed,
                "arrays": {"states": "hidden state of each kept token [n_tokens, d_model]",
                           "text_index": "index of the token's text in the corpus [n_tokens]",
                           "token_index": "position of the token in its tokenized text [n_tokens]"}}


class _Job:
    """One model's forward machinery: sharded pooled forward, batch size, context, pad id."""

    def __init__(self, model: Model, layers: tuple[int, ...], pooling: str, opts: ExtractOptions):
        self.forward = PooledForward(model, layers, pooling, make_mesh(opts.model_parallel))
        data = self.forward.data_size
        self.batch_size = -(-opts.batch_size // data) * data
        self.max_length = min(opts.max_length or model.config.max_position_embeddings,
                              model.config.max_position_embeddings)
        tok = model.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def run(self, tokenized, indices, mode, results: dict, bar) -> tuple[int, int]:
        """Dispatch every batch (asynchronously) and store each finished row via mode.row_result."""
        real = computed = 0
        pending = None
        for batch in make_batches(tokenized, indices, self.batch_size, self.max_length, self.pad_id,
                                  row_multiple=self.forward.data_size):
            out = self.forward(batch.input_ids, batch.attention_mask)  # runs while the host moves on
            if pending is not None:
                self._collect(*pending, mode, results, bar)
            pending = (batch, out)
            real += batch.real_tokens
            computed += batch.computed_tokens
        if pending is not None:
            self._collect(*pending, mode, results, bar)
        return real, computed

    @staticmethod
    def _collect(batch, out, mode, results, bar):
        host = np.asarray(out)  # [n_layers, B, D] or [n_layers, B, S, D]
        for r in np.nonzero(batch.rows >= 0)[0]:
            text = int(batch.rows[r])
            results[text] = mode.row_result(text, host[:, r], int(batch.attention_mask[r].sum()))
        if bar is not None:
            bar.update(int((batch.rows >= 0).sum()))
            bar.tokens += batch.real_tokens
            elapsed = max(time.perf_counter() - bar.t0, 1e-9)
            rate = f"{bar.n / 2 / elapsed:,.1f} pairs/s, " if mode.kind == "pairs" else ""
            bar.set_postfix_str(f"{rate}{bar.tokens / elapsed:,.0f} tok/s", refresh=False)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="text", dynamic_ncols=True, leave=True)
    bar.tokens, bar.t0 = 0, time.perf_counter()
    return bar


def _barrier(name: str, timeout_s: int = 6 * 3600) -> None:
    """All processes meet here. Processes can arrive minutes apart (uneven chunk shares, a busy
    host), longer than gloo's 30 s context set-up allows, so they first wait at the coordination
    service's barrier (generous timeout), then synchronise their devices over the collectives."""
    if jax.process_count() > 1:
        from jax._src import distributed
        from jax.experimental import multihost_utils

        distributed.global_state.client.wait_at_barrier(f"stf_jax_{name}", timeout_s * 1000)
        multihost_utils.sync_global_devices(name)


def _extract(mode, models: Sequence[str], out_dir: str | Path, opts: ExtractOptions,
             source: dict[str, Any]) -> list[ModelSummary]:
    """The shared driver: per model, compute this process's missing chunks, then assemble."""
    dtype = opts.dtype or default_dtype()
    layer_spec = parse_layer_spec(opts.layers)
    run_args = {
        "kind": mode.kind, "models": list(models), "source": source, "layers": list(layer_spec),
        "pooling": mode.pooling, "dtype": dtype, "batch_size": opts.batch_size, "chunk_size": opts.chunk_size,
        "max_length": opts.max_length, "truncate": opts.truncate, "chat_template": opts.chat_template,
        "model_parallel": opts.model_parallel, "max_tokens_per_text": opts.max_tokens_per_text, "seed": opts.seed,
    }
    run = RunDir(out_dir)
    pid, nproc = jax.process_index(), jax.process_count()
    # Process 0 creates (or checks) the directory before the others look at it.
    complete = run.prepare(run_args, opts.overwrite) if pid == 0 else False
    _barrier("prepared", timeout_s=600)
    if pid != 0:
        complete = run.prepare(run_args, overwrite=False, is_writer=False)
    if complete:
        print(f"{out_dir}: already complete (manifest.json present); nothing to do")
        return []

    n_chunks = -(-mode.n_items // opts.chunk_size)
    bounds = [(c * opts.chunk_size, min((c + 1) * opts.chunk_size, mode.n_items)) for c in range(n_chunks)]
    summaries, entries = [], []
    for name in models:
        model = load_model(name, dtype=dtype, progress=opts.progress)
        layers = resolve_layers(layer_spec, model.config.n_layers)
        slug = model_slug(name)
        job = _Job(model, layers, mode.pooling, opts)
        tokenized = tokenize(model.tokenizer, mode.texts(model), job.max_length, opts.truncate)
        mine = [c for c in range(n_chunks) if c % nproc == pid and not run.chunk_path(slug, c).exists()]
        n_texts = sum(len(mode.needed(*bounds[c])) for c in mine)
        bar = _progress(n_texts, name, opts.progress)
        t0 = time.perf_counter()
        real = computed = 0
        with ThreadPoolExecutor(1) as writer:  # writing overlaps the next chunk's forwards
            for c in mine:
                results: dict = {}
                r_, c_ = job.run(tokenized, mode.needed(*bounds[c]), mode, results, bar)
                real, computed = real + r_, computed + c_
                writer.submit(atomic_save_tensors, run.chunk_path(slug, c), mode.chunk_tensors(*bounds[c], results))
        if bar is not None:
            bar.close()
        summary = ModelSummary(name, n_texts, real, computed, time.perf_counter() - t0, tokenized.truncated,
                               str(Path(out_dir) / slug))
        _barrier(f"chunks-{slug}")
        files = {}
        if pid == 0:
            chunks = [run.load_chunk(slug, c) for c in range(n_chunks)]
            for j, layer in enumerate(layers):
                path = run.layer_path(slug, layer, kind=mode.file_kind)
                atomic_save_tensors(path, mode.layer_tensors(chunks, j),
                                    metadata={"layer": str(layer), "convention": "hf_hidden_states"})
                files[str(layer)] = str(path.relative_to(run.root))
        summaries.append(summary)
        print(summary.line(), flush=True)
        cfg = model.config
        entries.append({"name": name, "slug": slug, "family": cfg.family, "config_hash": cfg.config_hash,
                        "dtype": dtype, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "layers": list(layers),
                        "files": files, "real_tokens": real, "computed_tokens": computed,
                        "padding_efficiency": round(summary.padding_efficiency, 4),
                        "truncated": tokenized.truncated})
        del model, job

    if pid == 0:
        run.finish({"format_version": FORMAT_VERSION, "kind": mode.kind,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": entries,
                    "layers_requested": list(layer_spec), "pooling": mode.pooling,
                    "chat_template": opts.chat_template, "source": source, **mode.manifest(),
                    "versions": _versions()})
    _barrier("finished")
    return summaries


def extract_pairs(models: Sequence[str], pairs: Sequence[ContrastPair], out_dir: str | Path,
                  opts: ExtractOptions | None = None, dataset_name: str = "custom") -> list[ModelSummary]:
    """Pooled positive/negative states, raw differences and unit steering vectors for every pair,
    the same pairs in the same order for every model."""
    opts = opts or ExtractOptions()
    if not pairs:
        raise ValueError("no contrast pairs to extract")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate pair ids: every pair needs a unique id")
    source = {"dataset": dataset_name, "hash": dataset_hash(pairs), "n_pairs": len(pairs)}
    return _extract(_PairsMode(pairs, opts.pooling, opts.chat_template), models, out_dir, opts, source)


def extract_corpus(models: Sequence[str], texts: Sequence[str], out_dir: str | Path,
                   opts: ExtractOptions | None = None, corpus_name: str = "corpus") -> list[ModelSummary]:
    """Every real token's hidden state (optionally capped per text) for a plain-text corpus."""
    opts = opts or ExtractOptions()
    if not texts:
        raise ValueError("the corpus has no texts")
    source = {"corpus": corpus_name, "hash": _texts_hash(texts), "n_texts": len(texts)}
    mode = _CorpusMode(texts, opts.chat_template, opts.max_tokens_per_text, opts.seed)
    return _extract(mode, models, out_dir, opts, source)
