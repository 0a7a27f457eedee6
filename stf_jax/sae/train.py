"""Training an SAE on one layer of a model: optax Adam on streamed, shuffled token activations.

One jitted step per batch ([batch, d_in], sharded over the "data" axis of the device mesh like extraction,
bf16 on accelerators and f32 on CPU; parameters replicated, f32): loss and gradients (`model.losses`), an Adam update, decoder rows back to unit
norm, and the per-latent count of tokens since it last fired (dead latents feed TopK's AuxK loss). The
learning rate warms up over the first steps and decays linearly over the last fifth. Activations are
scaled by one number so their mean norm is sqrt(d_in) (measured on the first buffer), and the scale is
folded into the saved weights.

Checkpoints (orbax, every `checkpoint_every` steps, the last two kept) hold the parameters, the optimizer
state and the dead-latent counters; `train_sae` with the same output directory resumes from the latest one.
A resumed run continues on a stream reshuffled from its step (the data order differs from an uninterrupted
run; the token budget and the schedule do not).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ..errors import UserError
from ..options import check_options, option
from .model import SAEConfig, SAEParams, fold_scale, init_params, losses, normalize_decoder


class SAETrainError(UserError, ValueError):
    """Training arguments that cannot work (latents, k, layer, an output directory of another SAE)."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """latents: the SAE width, "Nx" (N × d_in) or a number; tokens: the training budget (the corpus is read
    again, reshuffled, until it is spent); batch: tokens per step; buffer: shuffle-buffer capacity in tokens;
    dead_after: tokens without firing after which a latent counts as dead; cache: keep the training tokens'
    states in OUT/activations.npy after the first pass (read back in shuffled chunks; removed when training
    ends), so the model runs over the corpus once; eval_texts: held-out texts the quality figures are measured
    on (the first ones)."""

    latents: str = "8x"
    architecture: Literal["topk", "standard"] = "topk"
    k: int = option(32, ge=1)
    l1_coefficient: float = option(5.0, ge=0.0)
    tokens: int = option(1_000_000, ge=1)
    batch: int = option(1024, ge=1)
    lr: float = option(4e-4, gt=0.0)
    warmup_steps: int = option(100, ge=0)
    buffer: int = option(65536, ge=1)
    dead_after: int = option(200_000, ge=1)
    text_batch: int = option(16, ge=1)
    max_length: int = option(256, ge=2)
    holdout_every: int = option(10, ge=2)
    eval_texts: int = option(400, ge=1)
    cache: bool = True
    checkpoint_every: int = option(200, ge=1)
    seed: int = option(0, ge=0)
    progress: bool = True

    def __post_init__(self):
        check_options(self)
        parse_latents(self.latents, 1)  # the form is checked here; the value needs d_in


def parse_latents(spec: str | int, d_in: int) -> int:
    """ "8x" -> 8 × d_in; "4096" -> 4096; anything else or <= 0 is an error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(x?)\s*", str(spec))
    value = float(m.group(1)) * (d_in if m.group(2) else 1) if m else 0
    if value < 1 or (not m.group(2) and not float(m.group(1)).is_integer()):
        raise SAETrainError(f"latents= {spec!r}: give a positive count (4096) or a multiple of the model width (8x)")
    return int(round(value))


@struct.dataclass
class TrainState:
    params: SAEParams
    opt_state: Any
    since_fired: jax.Array  # [d_sae] int32 tokens since each latent last fired
    step: jax.Array  # [] int32


def _schedule(opts: TrainOptions, total_steps: int) -> optax.Schedule:
    warm = min(opts.warmup_steps, max(total_steps // 10, 1))
    decay_start = max(int(total_steps * 0.8), warm + 1)
    return optax.join_schedules([
        optax.linear_schedule(0.0, opts.lr, warm),
        optax.constant_schedule(opts.lr),
        optax.linear_schedule(opts.lr, 0.0, max(total_steps - decay_start, 1)),
    ], [warm, decay_start])


def make_step(cfg: SAEConfig, opt: optax.GradientTransformation, dead_after: int) -> Callable:
    """(state, x [B, d_in]) -> (state, metrics); jitted, the state donated."""

    @partial(jax.jit, donate_argnums=(0,))
    def step(state: TrainState, x: jax.Array):
        dead = state.since_fired >= dead_after
        grads, m = jax.grad(lambda p: losses(cfg, p, x, dead), has_aux=True)(state.params)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = normalize_decoder(optax.apply_updates(state.params, updates))
        since = jnp.where(m.pop("fired"), 0, state.since_fired + x.shape[0])
        m["dead"] = jnp.mean(since >= dead_after)
        return TrainState(params, opt_state, since, state.step + 1), m

    return step


def _checkpointer(out: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(out / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def _initial_scale(chunks: Iterator[np.ndarray], want: int) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(scale so mean |x| = sqrt(d_in), mean of the scaled rows, the chunks read) from the first `want` tokens."""
    read, n = [], 0
    for c in chunks:
        read.append(c)
        n += len(c)
        if n >= want:
            break
    x = np.concatenate(read).astype(np.float64)
    scale = float(np.sqrt(x.shape[1]) / np.linalg.norm(x, axis=1).mean())
    return scale, (x.mean(0) * scale).astype(np.float32), read


@dataclasses.dataclass
class FitResult:
    params: SAEParams  # raw units (the scale folded in)
    scale: float
    steps: int
    steps_run: int  # by this call (a resumed run: since the resume)
    seconds: float  # this call's training loop
    first_step_seconds: float  # of which the first step (compilation, unless cached)
    dead_fraction: float
    history: list[dict[str, float]]


def fit_sae(cfg: SAEConfig, stream: Callable[[int], Iterator[np.ndarray]], opts: TrainOptions,
            ckpt_dir: str | Path | None = None, log: Callable[[str], None] = print) -> FitResult:
    """Train on `stream(start_step)`, an endless iterator of activation batches [opts.batch, d_in] (raw units,
    shuffled), for opts.tokens // opts.batch steps; with ckpt_dir, checkpoint there and resume from it."""
    total_steps = max(opts.tokens // opts.batch, 1)
    opt = optax.adam(_schedule(opts, total_steps), b1=0.9, b2=0.999)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    x_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", None))
    # activations travel in bf16 on accelerators (half the transfer), f32 on CPU; the SAE computes in f32
    x_dtype = np.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    if opts.batch % mesh.size:
        raise SAETrainError(f"batch= {opts.batch} does not split over {mesh.size} devices; use a multiple of {mesh.size}")
    meta = {"sae": dataclasses.asdict(cfg), "options": {k: v for k, v in dataclasses.asdict(opts).items()
                                                         if k != "progress"}}
    mngr = start = None
    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir).absolute()
        mngr = _checkpointer(ckpt_dir)
        start = mngr.latest_step()
    meta_path = ckpt_dir / "training_config.json" if ckpt_dir is not None else None
    if start is not None:
        old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if old.get("options") != meta["options"] or old.get("sae") != meta["sae"]:
            raise SAETrainError(f"{ckpt_dir} holds checkpoints of another SAE or other options; give a new --out "
                                "(or the same arguments to resume)")
        import orbax.checkpoint as ocp

        scale, batches = old["scale"], stream(start)
        state = mngr.restore(start, args=ocp.args.StandardRestore(_fresh_state(cfg, opt, jax.random.key(0), None)))
        log(f"resuming from step {start} of {total_steps}")
    else:
        batches = stream(0)
        scale, mean, first = _initial_scale(batches, min(opts.buffer, 32768))
        batches = _chain(first, batches)
        state = _fresh_state(cfg, opt, jax.random.key(opts.seed), mean)
        if meta_path is not None:
            from ..core.atomic import atomic_write_json

            atomic_write_json(meta_path, {**meta, "scale": scale})
    step_fn = make_step(cfg, opt, opts.dead_after)
    done = first_step = int(state.step)
    bar = _bar(total_steps, done, opts.progress)
    history, t0, t_first = [], time.perf_counter(), 0.0
    for xb in batches:
        if done >= total_steps:
            break
        state, m = step_fn(state, jax.device_put((xb * np.float32(scale)).astype(x_dtype), x_sharding))
        done += 1
        if done == first_step + 1:
            jax.block_until_ready(state)
            t_first = time.perf_counter() - t0
        if done % 50 == 0 or done == total_steps:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            history.append({"step": done, **m})
            bar.set_postfix(mse=f"{m['mse']:.3g}", l0=f"{m['l0']:.1f}", dead=f"{m['dead']:.1%}")
        if mngr is not None and (done % opts.checkpoint_every == 0 or done == total_steps):
            import orbax.checkpoint as ocp

            mngr.save(done, args=ocp.args.StandardSave(state))
        bar.update(1)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    if mngr is not None:
        mngr.wait_until_finished()
    bar.close()
    return FitResult(fold_scale(jax.device_get(state.params), scale), scale, done, done - first_step, seconds, t_first,
                     float(jnp.mean(state.since_fired >= opts.dead_after)), history)


def train_sae(model, layer: int, texts: list[str], out_dir: str | Path, opts: TrainOptions = TrainOptions(),
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate on held-out text and save an SAE for `layer` of `model` (module docstring); resumes
    from out_dir's checkpoints. Returns the summary written to out_dir/training.json."""
    from ..core.atomic import atomic_write_json
    from .activations import ActivationCache, LayerActivations, shuffled_batches, split_texts
    from .quality import sae_quality
    from .saelens import save_sae

    out = Path(out_dir)
    d_in = model.config.d_model
    cfg = SAEConfig(d_in=d_in, d_sae=parse_latents(opts.latents, d_in), architecture=opts.architecture, k=opts.k,
                    l1_coefficient=opts.l1_coefficient, model=model.name, layer=layer)
    train_texts, held = split_texts(texts, opts.holdout_every)

    states = LayerActivations(model, layer, train_texts, opts.text_batch, opts.max_length)
    cache = ActivationCache(out / "activations.npy", states.n_tokens, d_in) if opts.cache else None

    def stream(start_step: int) -> Iterator[np.ndarray]:
        """The corpus again and again, each pass reshuffled (seeded by the step it starts from and the pass);
        with the cache, the model runs over it once and later passes read the file."""
        for epoch in itertools.count():
            seed = opts.seed + 1_000_003 * start_step + epoch
            chunks = iter(states) if cache is None else cache.chunks(states, seed)
            yield from shuffled_batches(chunks, opts.batch, opts.buffer, seed=seed)

    out.mkdir(parents=True, exist_ok=True)
    fit = fit_sae(cfg, stream, opts, out, log)
    quality = sae_quality(model, cfg, fit.params, held[:opts.eval_texts], layer, max_length=opts.max_length)
    summary = {"model": model.name, "layer": layer, "d_in": d_in, "d_sae": cfg.d_sae, "architecture": cfg.architecture,
               "k": cfg.k, "steps": fit.steps, "tokens_trained": fit.steps * opts.batch, "seconds": fit.seconds,
               "tokens_per_second": fit.steps_run * opts.batch / fit.seconds if fit.seconds else 0.0,
               "scale": fit.scale, "dead_fraction_training": fit.dead_fraction,
               "heldout_texts": len(held[:opts.eval_texts]), **quality}
    save_sae(out / "sae", cfg, fit.params, metadata={"training": summary})
    atomic_write_json(out / "training.json", {**summary, "history": fit.history})
    if cache is not None:
        cache.remove()
    return summary


def _fresh_state(cfg: SAEConfig, opt, key, mean) -> TrainState:
    params = init_params(cfg, key, mean)
    return TrainState(params, opt.init(params), jnp.zeros(cfg.d_sae, jnp.int32), jnp.zeros((), jnp.int32))


def _chain(first: list[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield from first
    yield from rest


class _NoBar:
    def update(self, n): ...
    def set_postfix(self, **kw): ...
    def close(self): ...


def _bar(total: int, initial: int, show: bool):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sae", unit="step", dynamic_ncols=True)
