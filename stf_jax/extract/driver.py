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
from typing import Any, Literal, Sequence

import jax
import numpy as np

from .. import __version__
from ..data import ContrastPair, dataset_hash
from ..errors import UserError
from ..locks import DirLock
from ..options import check_options, option
from ..models.loading import load_model
from ..models.model import Model
from .batching import PACK_SLOTS, make_batches, make_packed_batches, rows_for_length, tokenize
from ..core.atomic import atomic_save_tensors, atomic_write_bytes
from ..core.chat import chat_text, has_chat_template
from ..core.layers import parse_layer_spec, resolve_layers
from .forward import PooledForward, make_mesh
from .store import FORMAT_VERSION, PAIRS_FILE, RunDir, model_slug

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # tokens per text unless --max-length: one row's attention stays well under 1 GB
DEFAULT_MAX_BATCH_TOKENS = 16384  # padded tokens per forward (rows x length)
DEFAULT_PACK_LENGTH = 128  # tokens per packed row: the shipped pairs' 33-token texts waste 3-6 % (23 % padded);
# longer rows cost more attention per token (the masked softmax over 128-wide rows is ~9 % of a smollm2 forward)
ATTENTION_BUDGET = 2 * 1024**3  # bytes of attention scores per forward (rows x heads x length²)


class ExtractInputError(UserError, ValueError):
    """Extraction inputs or options that cannot work (no pairs, duplicate ids, identical texts, a bad model)."""


class ExtractMemoryError(UserError, MemoryError):
    """A batch did not fit the device's memory."""


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class ExtractOptions:
    layers: Sequence[str | int | float] | str = ("-6",)
    pooling: Literal["last", "letter", "mean"] = "last"  # pairs mode (letter: A/B items' answer letter); corpus: tokens
    dtype: Literal["float32", "bfloat16"] | None = None  # None: `default_dtype()` (f32 on CPU, bf16 on accelerators)
    batch_size: int = option(32, ge=1)  # rows per forward (rounded up to a multiple of the data-parallel size)
    chunk_size: int = option(256, ge=1)  # pairs (or texts) per resumable chunk
    max_length: int | None = option(None, ge=1)  # default: min(the model's context, DEFAULT_MAX_LENGTH)
    max_batch_tokens: int | None = option(None, ge=1)  # padded tokens per forward; default DEFAULT_MAX_BATCH_TOKENS
    pack_length: int = option(DEFAULT_PACK_LENGTH, ge=0)  # pooled modes: texts up to this share rows this long; 0: none
    truncate: bool = True
    chat_template: bool = False
    model_parallel: int = option(1, ge=1)
    max_tokens_per_text: int | None = option(None, ge=1)  # corpus mode: cap with deterministic subsampling
    seed: int = option(0, ge=0)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_options(self)


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
    """bf16 on accelerators, f32 on CPUs. On a CPU with bf16 hardware and `stf_jax[cpu-bf16]`, `dtype="bfloat16"`
    multiplies the projections through MKL (`models.cpu_gemm`, 1.3x f32 end to end), but its pair vectors
    are not all within cosine 0.999 of f32 (min 0.993 over 1,000 shipped pairs; README, CPU table), the bar
    for choosing it unasked, so it stays opt-in."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _versions() -> dict[str, str]:
    import flax
    import tokenizers
    import transformers

    return {"stf_jax": __version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "python": sys.version.split()[0]}


def _wrap_chat(model: Model, text: str, prompt: str | None, open_answer: bool = False) -> str:
    """A pair side as the assistant's answer to its prompt (left open after the text when `open_answer`:
    letter pooling reads the answer, not the template's closing tokens), or a text as the user's turn."""
    if not has_chat_template(model.tokenizer):
        raise ExtractInputError(f"{model.name} has no chat template; drop chat_template=")
    if prompt:
        return chat_text(model.tokenizer, prompt, text, open_answer=open_answer)
    return model.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)


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
                text = (_wrap_chat(model, side, p.prompt or None, open_answer=self.pooling == "letter")
                        if self.chat_template else side)
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

    def flags(self, tensors: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """Pair ids whose steering vector is not a direction: zero difference, or NaN/Inf states."""
        nonfinite = ~np.isfinite(tensors["diff"]).all(axis=-1)
        zero = ~nonfinite & (np.linalg.norm(tensors["diff"], axis=-1) == 0)
        out = {}
        for key, rows in (("zero_vectors", zero), ("nonfinite", nonfinite)):
            if rows.any():
                out[key] = [self.pairs[i].id for i in np.nonzero(rows)[0]]
        return out

    def describe(self, model: Model, text: int) -> str:
        """Names a text by the pair(s) it belongs to (for truncation and tokenization messages)."""
        ids = [self.pairs[i].id + side for idx, side in ((self.pos_idx, " (positive)"), (self.neg_idx, " (negative)"))
               for i, t in enumerate(idx) if t == text]
        return f"pair {', '.join(ids[:3])}" if ids else f"text {text}"

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

    def flags(self, tensors: dict[str, np.ndarray]) -> dict[str, list[str]]:
        bad = ~np.isfinite(tensors["states"]).all(axis=-1)
        return {"nonfinite": sorted({f"text {int(t)}" for t in tensors["text_index"][bad]})} if bad.any() else {}

    def describe(self, model: Model, text: int) -> str:
        return f"corpus text {text} (line/record {text + 1} of the non-empty texts)"

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

    def __init__(self, plan: "_Plan", opts: ExtractOptions, data_size: int, pooling: str):
        self.plan, self.data_size = plan, data_size
        self.forward = None
        self.batch_size = -(-opts.batch_size // data_size) * data_size
        self.max_length = plan.max_length
        budget = opts.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
        n_heads = plan.config.n_heads
        self.rows_for = lambda seq: rows_for_length(seq, self.batch_size, data_size, budget, ATTENTION_BUDGET,
                                                    n_heads)
        # pooled states (pairs) pack short texts into shared rows; per-token states (corpus) keep a row per text
        self.pack_length = min(opts.pack_length, plan.max_length) if pooling != "tokens" else 0
        tok = plan.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def start(self, model: Model, layers: tuple[int, ...], pooling: str, opts: ExtractOptions) -> None:
        self.forward = PooledForward(model, layers, pooling, make_mesh(opts.model_parallel),
                                     slots=PACK_SLOTS if self.pack_length else 1)

    def batches(self, tokenized, indices):
        if self.pack_length:
            return make_packed_batches(tokenized, indices, self.batch_size, self.max_length, self.pad_id,
                                       self.pack_length, row_multiple=self.data_size, rows_for=self.rows_for)
        return make_batches(tokenized, indices, self.batch_size, self.max_length, self.pad_id,
                            row_multiple=self.data_size, rows_for=self.rows_for)

    def count(self, tokenized, indices) -> tuple[int, int]:
        """(real, computed) tokens of the batches over `indices`, without running them."""
        real = computed = 0
        for batch in self.batches(tokenized, indices):
            real += batch.real_tokens
            computed += batch.computed_tokens
        return real, computed

    def run(self, tokenized, indices, mode, results: dict, bar) -> tuple[int, int]:
        """Dispatch every batch (asynchronously) and store each finished row via mode.row_result."""
        real = computed = 0
        pending = None
        batch = None
        try:
            for batch in self.batches(tokenized, indices):
                out = self.forward(batch.input_ids, batch.attention_mask)  # runs while the host moves on
                if pending is not None:
                    self._collect(*pending, mode, results, bar)
                pending = (batch, out)
                real += batch.real_tokens
                computed += batch.computed_tokens
            if pending is not None:
                self._collect(*pending, mode, results, bar)
        except Exception as e:  # XlaRuntimeError: RESOURCE_EXHAUSTED is the user's to fix (shorter texts)
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                raise
            shape = "x".join(map(str, batch.input_ids.shape)) if batch is not None else "?"
            raise ExtractMemoryError(
                f"{self.plan.name}: out of memory on a batch of {shape} (rows x tokens); lower max_length= "
                f"(now {self.max_length}), max_batch_tokens= or batch_size=") from None
        return real, computed

    @staticmethod
    def _collect(batch, out, mode, results, bar):
        host = np.asarray(out)  # [n_layers, B, slots, D] or, per token, [n_layers, B, S, D]
        texts = batch.rows.reshape(len(batch.rows), -1)  # [B, slots]: the text in each packed slot, -1 none
        for r, k in zip(*np.nonzero(texts >= 0)):
            text = int(texts[r, k])
            states = host[:, r] if mode.pooling == "tokens" else host[:, r, k]
            results[text] = mode.row_result(text, states, int((batch.attention_mask[r] == k + 1).sum()))
        if bar is not None:
            bar.update(int((texts >= 0).sum()))
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
        # Private on purpose: public JAX (0.10.2) has no coordination-service barrier with a timeout
        # (jax.distributed is only initialize / is_initialized / shutdown, and multihost_utils.
        # sync_global_devices is the collective one that times out); JAX's own
        # experimental.array_serialization waits on this same client.
        from jax._src import distributed
        from jax.experimental import multihost_utils

        distributed.global_state.client.wait_at_barrier(f"stf_jax_{name}", timeout_s * 1000)
        multihost_utils.sync_global_devices(name)


@dataclasses.dataclass
class _Plan:
    """One model, checked before any model runs: config, tokenizer, layers, tokenized texts."""

    name: str
    slug: str
    config: Any
    tokenizer: Any
    layers: tuple[int, ...]
    max_length: int
    tokenized: Any
    texts_hash: str
    loaded: Model | None = None  # the caller's loaded model (not loaded again)


def _model_dir(name: str, progress: bool) -> Path:
    """Where a model's config.json and tokenizer live (registry name, directory, .gguf or hub id), without
    loading weights; a GGUF is converted (cached) here, as load_model would."""
    from ..models.loading import convert_gguf
    from ..models.loading.hf_dir import resolve_hub
    from ..models.registry import registry, resolve

    try:
        target = resolve(name) if name in registry() else name
        path = Path(target)
        if path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"{path}: GGUF file not found")
            return convert_gguf(path, progress=progress)
        if path.is_dir():
            if not (path / "config.json").exists():
                raise FileNotFoundError(f"{path}: no config.json (a model directory needs config.json + *.safetensors)")
            return path
        if path.exists():
            raise ValueError(f"{path}: not a model directory or .gguf file")
        if "/" in target and not target.startswith((".", "/")):
            return resolve_hub(target)
        raise FileNotFoundError(f"not a known model name, a model directory, a .gguf file or a hub id; known models: "
                                f"{', '.join(sorted(registry()))}")
    except UserError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise ExtractInputError(f"{name} (models=): {e}") from None


def _plan_models(mode, models: Sequence[str], layer_spec, opts: ExtractOptions,
                 loaded: dict[str, Model] | None = None) -> list[_Plan]:
    """Every model's arguments checked (layers, chat template, lengths) before any model runs. `loaded`:
    models the caller holds, by name (their config and tokenizer are used; nothing is read again)."""
    slugs: dict[str, str] = {}
    plans = []
    for name in models:
        slug = model_slug(name)
        if slug in slugs:
            raise ExtractInputError(f"models=: {name!r} and {slugs[slug]!r} would share the directory {slug!r}; "
                                    "give each model once (or copy one to a directory of another name)")
        slugs[slug] = name
        held = (loaded or {}).get(name)
        if held is not None:
            config, tokenizer = held.config, held.tokenizer
        else:
            config, tokenizer = _config_and_tokenizer(name, opts)
        layers = resolve_layers(layer_spec, config.n_layers, model=name)
        shim = _TextsOnly(name, tokenizer)
        texts = mode.texts(shim)
        max_length = min(opts.max_length or DEFAULT_MAX_LENGTH, config.max_position_embeddings)
        if opts.max_length and opts.max_length > config.max_position_embeddings:
            _warn(f"note: {name}: --max-length {opts.max_length} is beyond its context; using "
                  f"{config.max_position_embeddings}")
        tokenized = tokenize(tokenizer, texts, max_length, opts.truncate, add_special_tokens=not opts.chat_template,
                             describe=lambda i: f"{name}: {mode.describe(shim, i)}")
        if tokenized.truncated:
            named = "; ".join(f"{mode.describe(shim, i)} ({tokenized.original_lengths[i]} tokens)"
                              for i in tokenized.truncated_texts[:3])
            more = f" and {tokenized.truncated - 3} more" if tokenized.truncated > 3 else ""
            _warn(f"warning: {name}: {tokenized.truncated} text(s) cut to {max_length} tokens: {named}{more} "
                  "(--max-length raises the cap, --no-truncate refuses them)")
        plans.append(_Plan(name, slug, config, tokenizer, layers, max_length, tokenized, _texts_hash(texts), held))
    return plans


def _config_and_tokenizer(name: str, opts: ExtractOptions):
    """A model's DecoderConfig and tokenizer, without loading its weights."""
    import json

    from ..models.config import config_from_hf
    from ..models.loading import load_tokenizer

    model_dir = _model_dir(name, opts.progress)
    config_path = model_dir / "config.json"
    try:
        config = config_from_hf(json.loads(config_path.read_text()), str(config_path))
    except json.JSONDecodeError as e:
        raise ExtractInputError(f"{config_path}: not valid JSON ({e})") from None
    try:
        tokenizer = load_tokenizer(model_dir)
    except UserError:
        raise
    except (OSError, ValueError) as e:
        raise ExtractInputError(f"model {name}: cannot load its tokenizer ({e})") from None
    return config, tokenizer


def _held_models(models: Sequence[str | Model], dtype: str | None) -> tuple[list[str], dict[str, Model], str]:
    """(names, {name: loaded Model}, dtype): models may be names or loaded Models (used as they are)."""
    loaded = {m.name: m for m in models if isinstance(m, Model)}
    names = [m.name if isinstance(m, Model) else str(m) for m in models]
    held = {_dtype_name(m.dtype) for m in loaded.values()}
    if dtype is None:
        dtype = held.pop() if len(held) == 1 else default_dtype()
    for m in loaded.values():
        if _dtype_name(m.dtype) != dtype:
            raise ExtractInputError(f"model {m.name} is loaded in {_dtype_name(m.dtype)} but the extraction runs in "
                                    f"{dtype}: load it with dtype={dtype!r}, or give dtype={_dtype_name(m.dtype)!r}")
    return names, loaded, dtype


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _extract(mode, models: Sequence[str | Model], out_dir: str | Path, opts: ExtractOptions,
             source: dict[str, Any], pairs: Sequence[ContrastPair] | None = None) -> list[ModelSummary]:
    """The shared driver: check every model's arguments, then per model compute this process's missing
    chunks and assemble. Statistics in the manifest cover the whole run (every chunk, whichever process
    or earlier, killed run computed it). Models may be names or loaded Models."""
    models, loaded, dtype = _held_models(models, opts.dtype)
    layer_spec = parse_layer_spec(opts.layers)
    if not models:
        raise ExtractInputError("no models given (models=)")
    run_args = {
        "kind": mode.kind, "models": list(models), "source": source, "layers": list(layer_spec),
        "pooling": mode.pooling, "dtype": dtype, "batch_size": opts.batch_size, "chunk_size": opts.chunk_size,
        "max_length": opts.max_length, "truncate": opts.truncate, "chat_template": opts.chat_template,
        "model_parallel": opts.model_parallel, "max_tokens_per_text": opts.max_tokens_per_text, "seed": opts.seed,
    }
    if opts.max_batch_tokens is not None:  # recorded only when set: runs from before the option still resume
        run_args["max_batch_tokens"] = opts.max_batch_tokens
    run = RunDir(out_dir)
    pid, nproc = jax.process_index(), jax.process_count()
    # A finished, intact run with the same arguments: nothing to check or do.
    if pid == 0 and not opts.overwrite and (run.root / "run_args.json").exists() and run.manifest_path.exists():
        if run.prepare(run_args, overwrite=False, is_writer=False):
            print(f"{out_dir}: already complete (manifest.json present, checksums verified); nothing to do")
            _barrier("prepared", timeout_s=600)
            _barrier("finished")
            return []
    data_size = make_mesh(opts.model_parallel).shape["data"]
    plans = _plan_models(mode, models, layer_spec, opts, loaded)  # every argument checked before any work or file

    lock = DirLock(run.root, "extraction") if pid == 0 else None
    try:
        if lock is not None:
            lock.acquire()
        # Process 0 creates (or checks) the directory before the others look at it.
        complete = run.prepare(run_args, opts.overwrite, log=_warn) if pid == 0 else False
        _barrier("prepared", timeout_s=600)
        if pid != 0:
            complete = run.prepare(run_args, overwrite=False, is_writer=False)
        if complete:
            print(f"{out_dir}: already complete (manifest.json present, checksums verified); nothing to do")
            _barrier("finished")
            return []
        if pairs is not None and not opts.chat_template and pid == 0:
            prompted = sum(bool(p.prompt) for p in pairs)
            if prompted:
                _warn(f"note: {prompted} of {len(pairs)} pairs have a 'prompt'; it is used only with --chat-template "
                      "(as the user turn), so it is ignored here")
        return _compute(mode, plans, run, opts, dtype, data_size, layer_spec, source, pairs, pid, nproc)
    finally:
        if lock is not None:
            lock.release()


def _compute(mode, plans, run: RunDir, opts, dtype, data_size, layer_spec, source, pairs, pid, nproc):
    """Per model: its chunks, its layer files and manifest entry; then the manifest (process 0)."""
    n_chunks = -(-mode.n_items // opts.chunk_size)
    bounds = [(c * opts.chunk_size, min((c + 1) * opts.chunk_size, mode.n_items)) for c in range(n_chunks)]
    summaries, entries, checksums = [], [], {}
    for plan in plans:
        job = _Job(plan, opts, data_size, mode.pooling)
        summary = _compute_chunks(mode, plan, job, run, bounds, opts, dtype, pid, nproc)
        _barrier(f"chunks-{plan.slug}")
        files, flags = _assemble_layers(mode, run, plan, n_chunks, checksums) if pid == 0 else ({}, {})
        # whole-run statistics: every chunk's batches, whichever process (or earlier run) computed them
        run_real = run_computed = 0
        for c in range(n_chunks):
            r_, c_ = job.count(plan.tokenized, mode.needed(*bounds[c]))
            run_real, run_computed = run_real + r_, run_computed + c_
        summaries.append(summary)
        print(summary.line(), flush=True)
        entries.append(_manifest_entry(plan, dtype, files, flags, run_real, run_computed, source))
        del job
    if pid == 0:
        _finish_run(run, mode, entries, layer_spec, opts, source, pairs, checksums)
    _barrier("finished")
    return summaries


def _compute_chunks(mode, plan: _Plan, job: _Job, run: RunDir, bounds: list[tuple[int, int]], opts, dtype,
                    pid: int, nproc: int) -> ModelSummary:
    """This process's share of one model's missing chunks (a resumed run skips finished ones), each chunk
    written while the next one's forwards run."""
    name, slug, tokenized = plan.name, plan.slug, plan.tokenized
    mine = [c for c in range(len(bounds)) if c % nproc == pid and not run.chunk_ok(slug, c)]
    n_texts = sum(len(mode.needed(*bounds[c])) for c in mine)
    t0 = time.perf_counter()
    real = computed = 0
    mode.texts(_TextsOnly(name, plan.tokenizer))  # the pairs mode's row -> text maps for this model's texts
    if mine:
        model = plan.loaded or load_model(name, dtype=dtype, progress=opts.progress)
        job.start(model, plan.layers, mode.pooling, opts)
    bar = _progress(n_texts, name, opts.progress) if mine else None
    with ThreadPoolExecutor(1) as writer:  # writing overlaps the next chunk's forwards
        pending = []
        for c in mine:
            results: dict = {}
            r_, c_ = job.run(tokenized, mode.needed(*bounds[c]), mode, results, bar)
            real, computed = real + r_, computed + c_
            pending.append(writer.submit(atomic_save_tensors, run.chunk_path(slug, c),
                                         mode.chunk_tensors(*bounds[c], results)))
        for f in pending:
            f.result()  # a failed write fails the run
    if bar is not None:
        bar.close()
    return ModelSummary(name, n_texts, real, computed, time.perf_counter() - t0, tokenized.truncated,
                        str(Path(run.root) / slug))


def _assemble_layers(mode, run: RunDir, plan: _Plan, n_chunks: int, checksums: dict[str, str]
                     ) -> tuple[dict[str, str], dict]:
    """Every chunk of one model joined into one file per layer (process 0); checksums gains each file.

    Returns (layer -> file relative to the run, flagged rows per kind and layer)."""
    files, flags = {}, {}
    chunks = [run.load_chunk(plan.slug, c) for c in range(n_chunks)]
    for j, layer in enumerate(plan.layers):
        path = run.layer_path(plan.slug, layer, kind=mode.file_kind)
        tensors = mode.layer_tensors(chunks, j)
        for key, ids in mode.flags(tensors).items():
            flags.setdefault(key, {})[str(layer)] = ids
        rel = str(path.relative_to(run.root))
        checksums[rel] = atomic_save_tensors(path, tensors,
                                             metadata={"layer": str(layer), "convention": "hf_hidden_states"})
        files[str(layer)] = rel
    del chunks
    _report_flags(plan.name, flags)
    return files, flags


def _manifest_entry(plan: _Plan, dtype, files: dict, flags: dict, run_real: int, run_computed: int,
                    source: dict) -> dict[str, Any]:
    """One model's manifest record: what was run (config, dtype, layers, inputs) and what it produced."""
    cfg = plan.config
    entry = {"name": plan.name, "slug": plan.slug, "family": cfg.family, "model_type": cfg.model_type,
             "config_hash": cfg.config_hash,
             "dtype": dtype, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "layers": list(plan.layers),
             "files": files, "real_tokens": run_real, "computed_tokens": run_computed,
             "padding_efficiency": round(run_real / max(run_computed, 1), 4),
             "truncated": plan.tokenized.truncated, "max_length": plan.max_length,
             "inputs_hash": {"source": source["hash"], "texts": plan.texts_hash}}
    if flags:
        entry["flagged"] = flags
    return entry


def _finish_run(run: RunDir, mode, entries: list[dict], layer_spec, opts, source: dict, pairs, checksums: dict
                ) -> None:
    """The pairs file and the manifest (process 0): a run is complete once its manifest is written."""
    extra: dict[str, Any] = {}
    if pairs is not None:
        data = _pairs_jsonl(pairs)
        atomic_write_bytes(run.root / PAIRS_FILE, data)
        digest = hashlib.sha256(data).hexdigest()
        checksums[PAIRS_FILE] = digest
        extra["pairs_file"] = {"path": PAIRS_FILE, "sha256": digest}
    # no wall-clock time in the manifest: a resumed run's files are byte-identical to an uninterrupted run's
    run.finish({"format_version": FORMAT_VERSION, "kind": mode.kind, "models": entries,
                "layers_requested": list(layer_spec), "pooling": mode.pooling,
                "chat_template": opts.chat_template, "source": source, **mode.manifest(), **extra,
                "checksums": dict(sorted(checksums.items())), "versions": _versions()})


class _TextsOnly:
    """What mode.texts needs of a model (its name and tokenizer), without weights."""

    def __init__(self, name: str, tokenizer):
        self.name, self.tokenizer = name, tokenizer


def _pairs_jsonl(pairs: Sequence[ContrastPair]) -> bytes:
    import json

    return "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in pairs).encode("utf-8")


def _report_flags(name: str, flags: dict[str, dict[str, list[str]]]) -> None:
    what = {"zero_vectors": "a zero difference (both texts give the same state; its 'vectors' row is 0)",
            "nonfinite": "NaN or Inf states"}
    for key, per_layer in flags.items():
        for layer, ids in per_layer.items():
            _warn(f"warning: {name} layer {layer}: {len(ids)} row(s) with {what[key]}: {', '.join(ids[:5])}"
                  f"{' …' if len(ids) > 5 else ''} (recorded in manifest.json under 'flagged')")


def extract_pairs(models: Sequence[str | Model], pairs: Sequence[ContrastPair], out_dir: str | Path,
                  opts: ExtractOptions | None = None, dataset_name: str = "custom") -> list[ModelSummary]:
    """Pooled positive/negative states, raw differences and unit steering vectors for every pair,
    the same pairs in the same order for every model."""
    opts = opts or ExtractOptions()
    if not pairs:
        raise ExtractInputError("no contrast pairs to extract (check pairs=, traits=, split= and per_trait=)")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = [i for i in ids if i in seen or seen.add(i)]
        raise ExtractInputError(f"duplicate pair ids, e.g. {dup[:3]}: every pair needs a unique id")
    same = [p.id for p in pairs if p.positive == p.negative]
    if same:
        raise ExtractInputError(
            f"{len(same)} pair(s) have the same positive and negative text, e.g. {same[:3]}: their steering vector "
            "would be zero; fix or drop them (python -m stf_jax.data validate lists every problem)")
    source = {"dataset": dataset_name, "hash": dataset_hash(pairs), "n_pairs": len(pairs)}
    return _extract(_PairsMode(pairs, opts.pooling, opts.chat_template), models, out_dir, opts, source, pairs=pairs)


def extract_corpus(models: Sequence[str | Model], texts: Sequence[str], out_dir: str | Path,
                   opts: ExtractOptions | None = None, corpus_name: str = "corpus") -> list[ModelSummary]:
    """Every real token's hidden state (optionally capped per text) for a plain-text corpus."""
    opts = opts or ExtractOptions()
    if not texts:
        raise ExtractInputError("the corpus has no texts")
    source = {"corpus": corpus_name, "hash": _texts_hash(texts), "n_texts": len(texts)}
    mode = _CorpusMode(texts, opts.chat_template, opts.max_tokens_per_text, opts.seed)
    return _extract(mode, models, out_dir, opts, source)


def pooled_pairs(model: Model, pairs: Sequence[ContrastPair], layers, opts: ExtractOptions | None = None
                 ) -> dict[int, dict[str, np.ndarray]]:
    """In memory, what a pairs run's layer files hold: {HF layer: positive, negative, diff, vectors
    [n_pairs, d_model]}, computed by the same batched, jitted forward as `extract_pairs` (no run directory)."""
    opts = dataclasses.replace(opts or ExtractOptions(), layers=layers, progress=False)
    if not pairs:
        raise ExtractInputError("no contrast pairs (check pairs= and trait=)")
    names, loaded, dtype = _held_models([model], opts.dtype)
    mode = _PairsMode(list(pairs), opts.pooling, opts.chat_template)
    plan, = _plan_models(mode, names, parse_layer_spec(opts.layers), opts, loaded)
    job = _Job(plan, opts, make_mesh(opts.model_parallel).shape["data"], mode.pooling)
    job.start(model, plan.layers, mode.pooling, opts)
    results: dict = {}
    job.run(plan.tokenized, mode.needed(0, len(pairs)), mode, results, None)
    chunk = mode.chunk_tensors(0, len(pairs), results)
    return {lay: mode.layer_tensors([chunk], j) for j, lay in enumerate(plan.layers)}
