"""Continuous batching over one KV cache: fixed decode slots, a steering vector and strength per slot.

Each slot holds one request: its KV-cache row [L, K, T, Dh], its length, its steering [L, D] (the sum of
the vectors it asked for, already scaled) and its sampling settings. A new request is prefilled (together
with up to MAX_PREFILL others that wait), its prompt right-padded to a power-of-two bucket so the number of
compiled programs stays bounded, into the lowest free slot, and joins the batch at the next step; a
finished, stopped or abandoned request frees its slot at once. One decoding step advances every busy slot
by one token: the slots up to the highest busy one, rounded up to a power of two (a lightly loaded server
runs a small batch), in one compiled program whatever the mix of vectors, strengths, signs and lengths.
Steering is data (`Intervention` with per-row vectors [L, B, 1, D]), and each slot writes and attends to
its own cache length (a per-row cache index).

A row's tokens do not depend on the other rows: unsteered rows add exact zeros, and sampling draws from a
key made of the request's own seed and token index, so a request gets the same tokens alone or in any batch.

    engine = Engine(model, slots=8, context=512).start()
    text, finish, usage = engine.complete(engine.encode("The weather today"), steer=None,
                                          sampling=Sampling(max_tokens=32))
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..models.decoder import Decoder, Intervention
from ..models.generate import sample_token

log = logging.getLogger("stf_jax.serve")

MIN_BUCKET = 16
MAX_PREFILL = 8  # requests prefilled in one call when several are waiting
# end-of-turn tokens of the supported chat formats: a completion stops at them as at the tokenizer's eos
END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What a request asks of decoding (OpenAI's fields): greedy when temperature is 0."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # generate max_tokens whatever comes (vLLM's and llama-server's field: benchmarks)


@dataclasses.dataclass
class Event:
    """What the engine tells a request's listener: "text" (a new piece of the completion), then one "done"
    (finish_reason "stop" or "length", usage) or one "error" (text: what went wrong)."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None


@dataclasses.dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    steer: np.ndarray | None  # [L, D] summed, scaled steering (None: unsteered)
    sampling: Sampling
    on_event: Callable[[Event], None]
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    generated: list[int] = dataclasses.field(default_factory=list)
    sent: int = 0  # characters of the completion already sent
    cancelled: bool = False
    finished: bool = False


def prefill_bucket(n: int, context: int) -> int:
    """The padded prompt length for n tokens: the next power of two >= n (at least MIN_BUCKET), at most context."""
    return pow2_at_least(max(n, MIN_BUCKET), context)


def sample_rows(logits, temperature, top_p, seeds, steps, *, sample: bool):
    """Next token per row [B] from logits [B, V]; a sampled row draws with its own key (seed, token index),
    so what it draws does not depend on the batch it is in."""
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    keys = jax.vmap(lambda s, t: jax.random.fold_in(jax.random.PRNGKey(s), t))(seeds, steps)
    one = lambda lg, k, t, p: sample_token(lg[None], k, t, p, sample=True)[0]  # noqa: E731
    return jax.vmap(one)(logits, keys, temperature, top_p)


def pow2_at_least(n: int, cap: int) -> int:
    """The next power of two >= n, at most cap: the row buckets of prefill and decoding."""
    return min(1 << max(int(n) - 1, 0).bit_length(), cap)


@partial(jax.jit, static_argnames=("cfg", "dtype", "sample"), donate_argnames=("cache",))
def prefill_rows(params, cache, slots, ids, n, steer, temperature, top_p, seed, *, cfg, dtype, sample: bool):
    """Prefill P requests together into cache rows `slots` [P]: ids [P, S] right-padded to one bucket, n [P]
    real tokens, steer [P, L, D] added after each block at every prompt position. A padding row repeats a
    real one (same slot, same content). -> (cache, first generated tokens [P])."""
    p, s = ids.shape
    real = jnp.arange(s)[None] < n[:, None]  # [P, S]
    zeros = jnp.zeros((cfg.n_layers, p, cfg.n_kv_heads, s, cfg.head_dim), cache["k"].dtype)
    row_cache = {"k": zeros, "v": zeros, "index": 0, "key_mask": real,
                 "positions": jnp.broadcast_to(jnp.arange(s)[None], (p, s))}
    iv = Intervention.per_row(steer.swapaxes(0, 1)[:, :, None, :], real)
    model = Decoder(cfg, dtype=dtype, logits=True)
    out = model.apply({"params": params}, ids, real, iv, row_cache, head_index=(n - 1)[:, None])
    k, v = cache["k"], cache["v"]
    for row in range(p):  # each request's keys and values into its own slot
        at = (0, slots[row], 0, 0, 0)
        k = jax.lax.dynamic_update_slice(k, out.cache["k"][:, row:row + 1], at)
        v = jax.lax.dynamic_update_slice(v, out.cache["v"][:, row:row + 1], at)
    tokens = sample_rows(out.logits[:, 0], temperature, top_p, seed, jnp.zeros((p,), jnp.int32), sample=sample)
    return {"k": k, "v": v}, tokens


@partial(jax.jit, static_argnames=("cfg", "dtype", "sample", "rows"), donate_argnames=("cache",))
def decode_slots(params, cache, tokens, positions, steer, temperature, top_p, seeds, steps, *, cfg, dtype,
                 sample: bool, rows: int):
    """One token for each of the first `rows` slots (the busy ones are packed low, so a lightly loaded server
    runs a small batch): tokens [B] (each slot's last token) at positions [B] (where its keys go), steer
    [L, B, 1, D]. The blocks read the cache (`append_cache`); this step's keys and values are scattered into
    it afterwards, one column per slot. -> (cache, next tokens [rows])."""
    t = cache["k"].shape[3]
    tokens, positions = tokens[:rows], positions[:rows]
    row_cache = {"k": cache["k"][:, :rows], "v": cache["v"][:, :rows], "index": positions,
                 "key_mask": jnp.arange(t)[None] < positions[:, None], "positions": positions[:, None]}
    iv = Intervention.per_row(steer[:, :rows], jnp.ones((rows, 1)))
    model = Decoder(cfg, dtype=dtype, logits=True, last_logits_only=True, append_cache=True)
    out = model.apply({"params": params}, tokens[:, None], jnp.ones((rows, 1), jnp.int32), iv, row_cache)
    slot = jnp.arange(rows)
    cache = {name: cache[name].at[:, slot, :, positions, :].set(  # [L, B, 1, K, Dh] -> [rows, L, K, Dh]
        out.cache[name][:, :, 0].swapaxes(0, 1).astype(cache[name].dtype)) for name in ("k", "v")}
    nxt = sample_rows(out.logits[:, -1], temperature[:rows], top_p[:rows], seeds[:rows], steps[:rows], sample=sample)
    return cache, nxt


@partial(jax.jit, donate_argnames=("table",))
def _set_row(table, slot, row):
    """table [L, B, 1, D] with slot's steering set to row [L, D]."""
    return jax.lax.dynamic_update_slice(table, row[:, None, None, :].astype(table.dtype), (0, slot, 0, 0))


class Engine:
    """The decode loop, on its own thread; `submit` is safe from any thread (the HTTP server's)."""

    def __init__(self, model, slots: int = 8, context: int = 512, stop_token_ids: Sequence[int] | None = None):
        if slots < 1 or context < MIN_BUCKET + 1:
            raise ValueError(f"slots {slots} / context {context}: need >= 1 slot and a context > {MIN_BUCKET}")
        self.model, self.slots, self.context = model, int(slots), int(context)
        cfg = model.config
        self.stop_ids = set(stop_token_ids if stop_token_ids is not None else _stop_ids(model.tokenizer))
        self._cache = self._empty_cache()
        self._steer = jnp.zeros((cfg.n_layers, self.slots, 1, cfg.d_model), jnp.float32)
        self._tokens = np.zeros(self.slots, np.int32)
        self._positions = np.zeros(self.slots, np.int32)
        self._active: list[Request | None] = [None] * self.slots
        self._pending: collections.deque[Request] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.ready = threading.Event()
        self._token_times: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self.completed = self.failed = 0

    # ----------------------------------------------------------------- public

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def check(self, prompt_ids: Sequence[int], sampling: Sampling) -> str | None:
        """Why this request cannot run here (a message for a 400), or None."""
        n = len(prompt_ids)
        if n == 0:
            return "the prompt is empty"
        if n + sampling.max_tokens > self.context:
            return (f"the prompt ({n} tokens) plus max_tokens ({sampling.max_tokens}) exceeds the server's context of "
                    f"{self.context} tokens; shorten the prompt or lower max_tokens (or start with a larger --context)")
        return None

    def submit(self, prompt_ids: Sequence[int], steer: np.ndarray | None, sampling: Sampling,
               on_event: Callable[[Event], None]) -> Request:
        """Queue a request; `on_event` is called (on the engine's thread) with its events."""
        problem = self.check(prompt_ids, sampling)
        if problem:
            raise ValueError(problem)
        req = Request([int(t) for t in prompt_ids], None if steer is None else np.asarray(steer, np.float32),
                      sampling, on_event)
        with self._wake:
            self._pending.append(req)
            self._wake.notify()
        return req

    def cancel(self, req: Request) -> None:
        """Abandon a request (its client went away): its slot is freed at the next step boundary."""
        req.cancelled = True
        with self._wake:
            self._wake.notify()

    def complete(self, prompt_ids: Sequence[int], steer: np.ndarray | None = None,
                 sampling: Sampling = Sampling(), timeout: float | None = None) -> tuple[str, str, dict]:
        """Blocking: (completion text, finish_reason, usage) of one request."""
        done, parts, result = threading.Event(), [], {}

        def listen(event: Event):
            if event.kind == "text":
                parts.append(event.text)
            else:
                result["event"] = event
                done.set()

        req = self.submit(prompt_ids, steer, sampling, listen)
        if not done.wait(timeout):
            self.cancel(req)
            raise TimeoutError("the engine did not finish the request in time")
        event = result["event"]
        if event.kind == "error":
            raise RuntimeError(event.text)
        return "".join(parts), event.finish_reason, event.usage

    def start(self, warm: bool = True) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(warm,), name="stf_jax-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def metrics(self) -> dict:
        now = time.perf_counter()
        recent = [n for t, n in self._token_times if now - t <= 10.0]
        lat = np.asarray(self._latencies) if self._latencies else None
        return {"queue": len(self._pending), "active_slots": sum(r is not None for r in self._active),
                "slots": self.slots, "context": self.context, "tokens_per_s": sum(recent) / 10.0,
                "completed": self.completed, "failed": self.failed,
                "latency_p50_s": None if lat is None else float(np.percentile(lat, 50)),
                "latency_p95_s": None if lat is None else float(np.percentile(lat, 95)), "ready": self.ready.is_set()}

    # ----------------------------------------------------------------- the loop

    def _empty_cache(self):
        cfg = self.model.config
        shape = (cfg.n_layers, self.slots, cfg.n_kv_heads, self.context, cfg.head_dim)
        return {"k": jnp.zeros(shape, self.model.dtype), "v": jnp.zeros(shape, self.model.dtype)}

    def _run(self, warm: bool) -> None:
        if warm:
            self._warm()
        self.ready.set()
        while True:
            with self._wake:
                while not self._stopping and not self._pending and not any(self._active):
                    self._wake.wait(0.5)
                if self._stopping:
                    return
            self._drop_cancelled()
            self._admit()
            if any(self._active):
                self._step()

    def _warm(self) -> None:
        """Compile greedy decoding for every row bucket and the prefills of short prompts (one, or a burst)
        before serving; sampled decoding and longer prompts compile on first use (and persist in the
        compilation cache)."""
        t0 = time.perf_counter()
        rows = 1
        while True:
            self._cache, _ = self._decode(False, rows)
            if rows >= self.slots:
                break
            rows = pow2_at_least(rows + 1, self.slots)
        zero = np.zeros((self.model.config.n_layers, self.model.config.d_model), np.float32)
        for length in (MIN_BUCKET, 2 * MIN_BUCKET):  # one request, and a burst, of short prompts
            if length < self.context:
                for group in (1, MAX_PREFILL):
                    self._prefill_rows([(0, Request([0] * length, zero, Sampling(), lambda e: None))] * group, False)
        jax.block_until_ready(self._cache["k"])
        log.info("engine warm in %.1f s (%d slots, context %d)", time.perf_counter() - t0, self.slots, self.context)

    def _drop_cancelled(self) -> None:
        for slot, req in enumerate(self._active):
            if req is not None and req.cancelled:
                self._free(slot)

    def _admit(self) -> None:
        """Move queued requests into free slots (lowest first), prefilling up to MAX_PREFILL of them together."""
        while True:
            with self._wake:
                free = [i for i, r in enumerate(self._active) if r is None]
                group = []
                while self._pending and len(group) < min(len(free), MAX_PREFILL):
                    req = self._pending.popleft()
                    if not req.cancelled:
                        group.append((free[len(group)], req))
            if not group:
                return
            try:
                firsts = self._prefill_rows(group, any(r.sampling.temperature > 0 for _, r in group))
            except Exception as exc:  # requests that cannot run must not stop the others
                log.exception("prefill failed")
                for _, req in group:
                    self._fail(req, exc)
                continue
            for (slot, req), first in zip(group, firsts):
                self._steer = _set_row(self._steer, jnp.int32(slot), jnp.asarray(self._steer_of(req)))
                self._active[slot] = req
                self._tokens[slot], self._positions[slot] = first, len(req.prompt_ids)
                self._emit(slot, int(first))

    def _steer_of(self, req: Request) -> np.ndarray:
        cfg = self.model.config
        return req.steer if req.steer is not None else np.zeros((cfg.n_layers, cfg.d_model), np.float32)

    def _prefill_rows(self, group: list[tuple[int, Request]], sample: bool) -> np.ndarray:
        """First tokens of the (slot, request) group, prefilled in one call (rows padded to a power of two)."""
        rows = 1 if len(group) == 1 else MAX_PREFILL  # two shapes per length bucket, both compiled at warm-up
        padded_group = group + [group[0]] * (rows - len(group))
        bucket = prefill_bucket(max(len(r.prompt_ids) for _, r in group), self.context)
        ids = np.zeros((rows, bucket), np.int32)
        for i, (_, req) in enumerate(padded_group):
            ids[i, :len(req.prompt_ids)] = req.prompt_ids
        field = lambda f, dt: jnp.asarray(np.asarray([f(r) for _, r in padded_group], dt))  # noqa: E731
        self._cache, tokens = prefill_rows(
            self.model.params, self._cache, jnp.asarray([slot for slot, _ in padded_group], jnp.int32),
            jnp.asarray(ids),
            field(lambda r: len(r.prompt_ids), np.int32), field(self._steer_of, np.float32),
            field(lambda r: r.sampling.temperature, np.float32), field(lambda r: r.sampling.top_p, np.float32),
            field(lambda r: r.sampling.seed & 0xFFFFFFFF, np.uint32), cfg=self.model.config, dtype=self.model.dtype,
            sample=sample)
        return np.asarray(tokens)[:len(group)]

    def _busy_rows(self) -> int:
        """Slots the step must run: up to the highest busy one, rounded up to a power of two."""
        top = max((i for i, r in enumerate(self._active) if r is not None), default=0)
        return pow2_at_least(top + 1, self.slots)

    def _decode(self, sample: bool, rows: int):
        s = self.slots
        temps, top_p, seeds, steps = (np.zeros(s, np.float32), np.ones(s, np.float32), np.zeros(s, np.uint32),
                                      np.zeros(s, np.int32))
        for i, req in enumerate(self._active):
            if req is not None:
                temps[i], top_p[i] = req.sampling.temperature, req.sampling.top_p
                seeds[i], steps[i] = req.sampling.seed & 0xFFFFFFFF, len(req.generated)
        return decode_slots(self.model.params, self._cache, jnp.asarray(self._tokens), jnp.asarray(self._positions),
                            self._steer, jnp.asarray(temps), jnp.asarray(top_p), jnp.asarray(seeds), jnp.asarray(steps),
                            cfg=self.model.config, dtype=self.model.dtype, sample=sample, rows=rows)

    def _step(self) -> None:
        sample = any(r is not None and r.sampling.temperature > 0 for r in self._active)
        try:
            self._cache, nxt = self._decode(sample, self._busy_rows())
            nxt = np.asarray(nxt)
        except Exception as exc:  # the batch's step failed: answer its requests, start from a fresh cache
            log.exception("decoding step failed")
            for slot, req in enumerate(self._active):
                if req is not None:
                    self._fail(req, exc)
                    self._active[slot] = None
            self._cache = self._empty_cache()
            return
        self._token_times.append((time.perf_counter(), sum(r is not None for r in self._active)))
        for slot, req in enumerate(self._active[:len(nxt)]):
            if req is not None:
                self._positions[slot] += 1
                self._tokens[slot] = nxt[slot]
                self._emit(slot, int(nxt[slot]))

    # ----------------------------------------------------------------- one request's tokens

    def _emit(self, slot: int, token: int) -> None:
        req = self._active[slot]
        try:
            finish = None
            if token in self.stop_ids and not req.sampling.ignore_eos:
                finish = "stop"
            else:
                req.generated.append(token)
            text = self._detokenize(req)
            if finish is None:
                text, hit = _cut_at_stop(text, req.sampling.stop)
                if hit:
                    finish = "stop"
                elif len(req.generated) >= req.sampling.max_tokens:
                    finish = "length"
            if not finish and text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                text = text[:-1]
            ready = text if finish else _holdback(text, req.sampling.stop)
            if len(ready) > req.sent:
                req.on_event(Event("text", ready[req.sent:]))
                req.sent = len(ready)
            if finish:
                usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.generated),
                         "total_tokens": len(req.prompt_ids) + len(req.generated)}
                req.finished = True
                self._latencies.append(time.perf_counter() - req.submitted)
                self.completed += 1
                req.on_event(Event("done", finish_reason=finish, usage=usage))
                self._free(slot)
        except Exception as exc:  # this request's fault (a listener, the tokenizer): only it is answered with it
            log.exception("request failed")
            self._fail(req, exc)
            self._free(slot)

    def _detokenize(self, req: Request) -> str:
        return self.model.tokenizer.decode(req.generated, skip_special_tokens=True)

    def _fail(self, req: Request, exc: BaseException) -> None:
        self.failed += 1
        req.finished = True
        try:
            req.on_event(Event("error", f"generation failed: {type(exc).__name__}: {exc}"))
        except Exception:
            log.exception("listener failed")

    def _free(self, slot: int) -> None:
        self._active[slot] = None
        self._tokens[slot], self._positions[slot] = 0, 0


def _stop_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    return ids + [vocab[t] for t in END_OF_TURN if t in vocab]


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(text before the first stop string, whether one occurred)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _holdback(text: str, stops: Sequence[str]) -> str:
    """The part of text that can be sent now: what could still become the start of a stop string is held."""
    keep = max((len(s) - 1 for s in stops if s), default=0)
    for k in range(min(keep, len(text)), 0, -1):
        if any(s.startswith(text[-k:]) for s in stops if s):
            return text[:-k]
    return text
