"""SAE training throughput: stf_jax against sae-lens training the same TopK SAE on the same activations, same run.

    python scripts/bench_sae.py --model smollm2-135m --layer 15            # 65,536 tokens, 30 timed steps
    python scripts/bench_sae.py --tokens 8192 --steps 3 --batch 1024       # smoke mode (about a minute)

One process, one CPU, one set of activations:
(0) the machine's limit: a 2048^3 f32 matmul through JAX and through PyTorch (median of 5, GFLOP/s);
(1) the data: --tokens token states of --model entering block --layer over the shipped corpus' training texts
    (stf_jax.sae.activations.LayerActivations, each text's first token dropped as the trainer does), held in
    memory as one f32 array, shuffled once (seeded), and scaled once by one number so their mean norm is
    sqrt(d_in) (as stf_jax's trainer scales). Both trainers read exactly these scaled rows, cut into
    --batch-token batches (cycled); the host-side scaling fit_sae does per batch is therefore not counted
    on either side, nor is sae-lens' activation store;
(2) stf_jax: the TopK SAE (--latents, --k) trained by `stf_jax.sae.train.make_step` (the jitted step fit_sae
    runs: loss + AuxK, optax Adam b1 0.9 b2 0.999, decoder rows renormalised, dead-latent counters) with a
    constant learning rate --lr (fit_sae's warm-up/decay schedule is a scalar function of the step: the same
    work), batches placed with fit_sae's data sharding;
(3) sae-lens (v6): its TopK *training* SAE (TopKTrainingSAE from TopKTrainingSAEConfig: its defaults, i.e.
    AuxK on with coefficient 1.0, rescale_acts_by_decoder_norm, dense activations, f32, cpu) stepped by its
    own SAETrainer: each step is the trainer's fit-loop body minus logging and checkpoints
    (maybe_reset_sparsity, SAETrainer.step = training_forward_pass, firing statistics, backward,
    clip_grad_norm_(1.0), torch Adam with the same lr and betas, zero_grad, lr scheduler step), with
    torch.set_num_threads(cores). Its dead-latent window is set to the same token count as stf_jax's
    (dead_after / batch steps);
(4) the check that both train the same thing: sae-lens' SAE gets stf_jax's initial weights (W_enc [d_in, d_sae],
    b_enc, W_dec [d_sae, d_in] with unit rows, b_dec at the data mean); the first step's MSE (squared error
    summed over d_in, mean over tokens, on both sides) must agree to a relative --tolerance, else the script
    exits 1 after writing its JSON.

Each side warms up (compiles) with --warmup steps, then --steps steps are timed (JAX: block_until_ready at the
end; PyTorch on CPU is synchronous). tokens/s = steps x batch / seconds. FLOPs of one training step: the
encoder and decoder matmuls, forward and backward (backward = 2 x forward):
    3 x 2 x 2 x batch x d_in x d_sae
(TopK, AuxK, Adam and the elementwise work are not counted: GFLOP/s is a lower bound of the work done).

Prints the CPU flags line, the first-step losses, a markdown table row per side (tokens/s, GFLOP/s, the
fraction of its own framework's matmul peak and of the best of the two) and the stf_jax / sae-lens ratio, and
writes everything to --out as JSON (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

FLOPS_FORMULA = "3 x 2 x 2 x batch x d_in x d_sae (encoder + decoder matmul, forward + backward)"


def collect_activations(model, layer: int, n_tokens: int, text_batch: int, max_length: int, seed: int):
    """(rows [n_tokens, d_in] f32 in a seeded random order, texts read, seconds): the first n_tokens token states
    of the shipped corpus' training texts entering block `layer`."""
    from stf_jax.sae.activations import LayerActivations, corpus_texts, split_texts

    train_texts, _ = split_texts(corpus_texts("shipped"))
    states = LayerActivations(model, layer, train_texts, text_batch, max_length)
    if states.n_tokens < n_tokens:
        raise SystemExit(f"--tokens {n_tokens}: the shipped corpus' training texts hold {states.n_tokens} tokens "
                         f"for {model.name}; ask for at most that many")
    t0 = time.perf_counter()
    chunks, n = [], 0
    for chunk in states:
        chunks.append(np.asarray(chunk, np.float32))
        n += len(chunk)
        if n >= n_tokens:
            break
    rows = np.concatenate(chunks)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))[:n_tokens]]
    return np.ascontiguousarray(rows), len(train_texts), time.perf_counter() - t0


def scale_rows(x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(x * scale so the mean row norm is sqrt(d_in), scale, mean of the scaled rows): fit_sae's scaling."""
    x64 = x.astype(np.float64)
    scale = float(np.sqrt(x.shape[1]) / np.linalg.norm(x64, axis=1).mean())
    scaled = (x * np.float32(scale)).astype(np.float32)
    return scaled, scale, scaled.astype(np.float64).mean(0).astype(np.float32)


def f32_matmul_peaks(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """FLOP/s of an n^3 f32 matmul through JAX (precision HIGHEST) and PyTorch, median of reps after a warm-up."""
    import jax
    import jax.numpy as jnp
    import torch

    from stf_jax.bench.device import jax_sync, timed

    a = np.random.default_rng(0).standard_normal((n, n), np.float32)
    x = jnp.asarray(a)
    f = jax.jit(lambda u, v: jnp.matmul(u, v, precision=jax.lax.Precision.HIGHEST))
    t = torch.from_numpy(a)
    return {"jax_float32": 2 * n ** 3 / timed(lambda: f(x, x), reps, jax_sync),
            "torch_float32": 2 * n ** 3 / timed(lambda: t @ t, reps, lambda r: r)}


def run_stf(cfg, batches: list[np.ndarray], mean: np.ndarray, lr: float, dead_after: int, warmup: int, steps: int,
            seed: int) -> dict:
    """Train stf_jax's SAE for warmup + steps steps; returns the initial weights, the first step's losses and
    the timings."""
    import jax
    import optax

    from stf_jax.sae.train import _fresh_state, make_step

    opt = optax.adam(lr, b1=0.9, b2=0.999)
    state = _fresh_state(cfg, opt, jax.random.key(seed), mean)
    init = {k: np.array(v) for k, v in vars(jax.device_get(state.params)).items()}  # copied before donation
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", None))
    xs = [jax.device_put(b, sharding) for b in batches]
    step_fn = make_step(cfg, opt, dead_after)
    t0 = time.perf_counter()
    state, m = step_fn(state, xs[0])
    first = {k: float(v) for k, v in jax.device_get(m).items() if k in ("mse", "aux", "loss", "l0")}
    compile_s = time.perf_counter() - t0
    for i in range(1, warmup):
        state, m = step_fn(state, xs[i % len(xs)])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        state, m = step_fn(state, xs[i % len(xs)])
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    last = {k: float(v) for k, v in jax.device_get(m).items() if k in ("mse", "aux", "loss", "l0", "dead")}
    return {"init": init, "first": first, "last": last, "seconds": seconds, "first_step_seconds": compile_s,
            "devices": len(jax.devices())}


def run_saelens(cfg, init: dict[str, np.ndarray], batches: list[np.ndarray], lr: float, dead_after: int,
                warmup: int, steps: int) -> dict:
    """Train sae-lens' TopKTrainingSAE with its SAETrainer's per-step work for warmup + steps steps, from `init`."""
    import torch
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.set_num_threads(os.cpu_count())
    batch = len(batches[0])
    sl_cfg = TopKTrainingSAEConfig(d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k, dtype="float32", device="cpu")
    sae = TopKTrainingSAE(sl_cfg)
    with torch.no_grad():
        for name, value in init.items():
            getattr(sae, name).copy_(torch.from_numpy(value))
    window = math.ceil(dead_after / batch)  # steps: the same number of tokens as stf_jax's dead_after
    trainer_cfg = SAETrainerConfig(total_training_samples=(warmup + steps) * batch, train_batch_size_samples=batch,
                                   lr=lr, lr_end=lr / 10, adam_beta1=0.9, adam_beta2=0.999, device="cpu",
                                   dead_feature_window=window, logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(trainer_cfg, sae, data_provider=iter(()))
    xs = [torch.from_numpy(b) for b in batches]

    def step(x):
        # SAETrainer.fit's loop body without wandb logging, evals, checkpoints and the progress bar
        trainer.maybe_reset_sparsity()
        out = trainer.step(x)
        trainer.n_training_steps += 1
        return out

    t0 = time.perf_counter()
    out = step(xs[0])
    first = {"mse": out.losses["mse_loss"].detach().item(), "loss": out.loss.detach().item(),
             "aux": out.losses["auxiliary_reconstruction_loss"].detach().item(),
             "l0": (out.feature_acts > 0).float().sum(-1).mean().item()}
    first_s = time.perf_counter() - t0
    for i in range(1, warmup):
        step(xs[i % len(xs)])
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        out = step(xs[i % len(xs)])
    seconds = time.perf_counter() - t0
    last = {"mse": out.losses["mse_loss"].detach().item(), "loss": out.loss.detach().item(),
            "dead": float(trainer.dead_neurons.float().mean())}
    return {"first": first, "last": last, "seconds": seconds, "first_step_seconds": first_s,
            "threads": torch.get_num_threads(), "dead_feature_window_steps": window,
            "config": {"aux_loss_coefficient": sl_cfg.aux_loss_coefficient,
                       "rescale_acts_by_decoder_norm": sl_cfg.rescale_acts_by_decoder_norm,
                       "use_sparse_activations": sl_cfg.use_sparse_activations,
                       "apply_b_dec_to_input": sl_cfg.apply_b_dec_to_input,
                       "normalize_activations": sl_cfg.normalize_activations,
                       "lr_scheduler": trainer_cfg.lr_scheduler_name, "autocast": trainer_cfg.autocast}}


DIFFERENCES = [
    "MSE: both sum the squared error over d_in and average over tokens (sae-lens: mse_loss(reduction='none')"
    ".sum(-1).mean()); the first-step MSEs are compared directly",
    "decoder norm: stf_jax renormalises W_dec rows to 1 after every step; sae-lens (rescale_acts_by_decoder_norm"
    "=True) leaves W_dec free and multiplies pre-activations by |W_dec row| and divides the code by it on every "
    "forward: the same function while the rows have unit norm (the first step), different weights after",
    "gradient clipping: sae-lens' SAETrainer clips the global gradient norm to 1.0 every step; stf_jax does not "
    "clip (Adam is nearly invariant to a uniform gradient scale, so the first update hardly differs)",
    "AuxK: coefficient 1.0 (sae-lens default) vs 1/32 (stf_jax, the paper's); k_aux = d_in // 2 on both; "
    "both skip the aux loss when no latent is dead (sae-lens with a host sync on the dead count, stf_jax with a "
    "lax.cond branch inside the compiled step)",
    "dead latents: sae-lens counts steps without firing (> window), stf_jax tokens (>= dead_after); the window "
    "is set to the same token count here",
    "bookkeeping: sae-lens' trainer also accumulates per-latent firing frequencies (act_freq_scores) every step",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="registry name, HF directory or .gguf [smollm2-135m]")
    parser.add_argument("--layer", default="15", help="the residual stream entering this block (15, -6, 0.5) [15]")
    parser.add_argument("--tokens", type=int, default=65536,
                        help="token states collected and held in memory; both trainers cycle over them [65536]")
    parser.add_argument("--latents", default="8x", help="SAE width: a multiple of d_in (8x) or a count [8x]")
    parser.add_argument("--k", type=int, default=32, help="active latents per token [32]")
    parser.add_argument("--batch", type=int, default=4096, help="tokens per training step [4096]")
    parser.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate, constant, both sides [4e-4]")
    parser.add_argument("--dead-after", type=int, default=None,
                        help="tokens without firing after which a latent is dead (both sides) [stf_jax's default]")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, allocator) [3]")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side [30]")
    parser.add_argument("--text-batch", type=int, default=16, help="texts per model forward when collecting [16]")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text when collecting [256]")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative difference of the first-step MSEs [1e-4]")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and row-order seed [0]")
    parser.add_argument("--out", default="runs/bench_sae.json", help="JSON report [runs/bench_sae.json]")
    args = parser.parse_args(argv)
    for name in ("tokens", "k", "batch", "warmup", "steps", "text_batch", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.tokens < args.batch:
        parser.error(f"--tokens {args.tokens} holds no batch of {args.batch}; give --tokens >= --batch")

    import jax
    import sae_lens
    import torch

    from stf_jax.bench.device import cpu_flags
    from stf_jax.core.atomic import atomic_write_json
    from stf_jax.core.layers import resolve_layer
    from stf_jax.models.loading import load_model
    from stf_jax.sae.model import SAEConfig
    from stf_jax.sae.train import TrainOptions, parse_latents

    dead_after = args.dead_after or TrainOptions().dead_after
    print(f"machine: {cpu_flags()}")
    print(f"versions: jax {jax.__version__}, torch {torch.__version__}, sae-lens {sae_lens.__version__}", flush=True)
    peaks = f32_matmul_peaks(2048)
    print(f"matmul 2048^3 f32: JAX {peaks['jax_float32'] / 1e9:,.1f} GFLOP/s, "
          f"PyTorch {peaks['torch_float32'] / 1e9:,.1f} GFLOP/s", flush=True)

    model = load_model(args.model, progress=False)
    n_layers = model.config.n_layers
    layer = resolve_layer(str(args.layer), n_layers, model.name, flag="--layer")
    if not 1 <= layer < n_layers:
        parser.error(f"--layer {args.layer}: an SAE reads the stream entering a block, 1 .. {n_layers - 1}")
    d_in = model.config.d_model
    cfg = SAEConfig(d_in=d_in, d_sae=parse_latents(args.latents, d_in), k=args.k, model=model.name, layer=layer)
    raw, n_texts, collect_s = collect_activations(model, layer, args.tokens, args.text_batch, args.max_length,
                                                  args.seed)
    del model
    data, scale, mean = scale_rows(raw)
    del raw
    n_batches = len(data) // args.batch
    batches = [data[i * args.batch:(i + 1) * args.batch] for i in range(n_batches)]
    flops_step = 3 * 2 * 2 * args.batch * d_in * cfg.d_sae
    print(f"data: {len(data):,} tokens of {args.model} entering block {layer}/{n_layers} ({n_texts} training texts "
          f"read from; {collect_s:.1f} s), d_in {d_in}, scaled by {scale:.4g} to mean norm sqrt(d_in), "
          f"{n_batches} batches of {args.batch} cycled")
    print(f"SAE: TopK, d_sae {cfg.d_sae}, k {cfg.k}, lr {args.lr} (constant), Adam b1 0.9 b2 0.999; "
          f"{args.warmup} warm-up + {args.steps} timed steps per side")
    print(f"FLOPs/step = {FLOPS_FORMULA} = {flops_step / 1e9:.2f} GFLOP", flush=True)

    ours = run_stf(cfg, batches, mean, args.lr, dead_after, args.warmup, args.steps, args.seed)
    print(f"  stf_jax: {args.steps * args.batch / ours['seconds']:,.0f} tokens/s "
          f"(first step incl. compile {ours['first_step_seconds']:.1f} s)", flush=True)
    theirs = run_saelens(cfg, ours.pop("init"), batches, args.lr, dead_after, args.warmup, args.steps)
    print(f"  sae-lens: {args.steps * args.batch / theirs['seconds']:,.0f} tokens/s "
          f"({theirs['threads']} torch threads)", flush=True)

    a, b = ours["first"]["mse"], theirs["first"]["mse"]
    rel = abs(a - b) / max(abs(b), 1e-30)
    agree = bool(rel <= args.tolerance)
    print(f"\nfirst-step MSE (same init, same batch): stf_jax {a:.6g}, sae-lens {b:.6g}, relative difference "
          f"{rel:.2e} ({'agree' if agree else 'DISAGREE'}, tolerance {args.tolerance:g}); total loss stf_jax "
          f"{ours['first']['loss']:.6g} (aux {ours['first']['aux']:.3g}), sae-lens {theirs['first']['loss']:.6g} "
          f"(aux {theirs['first']['aux']:.3g}); L0 {ours['first']['l0']:.1f} / {theirs['first']['l0']:.1f}")
    print("per-step differences (the MSE compared is the comparable part):")
    for d in DIFFERENCES:
        print(f"  - {d}")

    best = max(peaks.values())
    sides = {}
    for name, res, peak in (("stf_jax", ours, peaks["jax_float32"]), ("sae_lens", theirs, peaks["torch_float32"])):
        tps = args.steps * args.batch / res["seconds"]
        flops = flops_step * args.steps / res["seconds"]
        sides[name] = {**res, "tokens_per_s": tps, "gflops": flops / 1e9, "of_own_matmul_peak": flops / peak,
                       "of_best_matmul_peak": flops / best, "steps": args.steps, "batch": args.batch}
    ratio = sides["stf_jax"]["tokens_per_s"] / sides["sae_lens"]["tokens_per_s"]
    print("\n| trainer | timed steps x batch | seconds | tokens/s | GFLOP/s | of matmul peak (own / best) | note |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    notes = {"stf_jax": f"make_step (jit), XLA CPU, {ours['devices']} device(s)",
             "sae_lens": f"SAETrainer.step, TopKTrainingSAE, {theirs['threads']} threads"}
    for name, s in sides.items():
        print(f"| {name.replace('_', '-')} | {s['steps']} x {s['batch']} | {s['seconds']:.2f} | {s['tokens_per_s']:,.0f} "
              f"| {s['gflops']:.1f} | {s['of_own_matmul_peak']:.0%} / {s['of_best_matmul_peak']:.0%} | {notes[name]} |")
    print(f"\nstf_jax / sae-lens: {ratio:.2f}x tokens/s")

    report = {"cpu": cpu_flags(), "argv": sys.argv, "versions": {"jax": jax.__version__, "torch": torch.__version__,
                                                               "sae_lens": sae_lens.__version__},
              "model": args.model, "layer": layer, "n_layers": n_layers, "d_in": d_in, "d_sae": cfg.d_sae, "k": cfg.k,
              "k_aux": cfg.k_aux, "batch": args.batch, "warmup_steps": args.warmup, "timed_steps": args.steps,
              "lr": args.lr, "dead_after_tokens": dead_after, "tokens": len(data), "texts": n_texts,
              "collect_seconds": collect_s, "scale": scale, "flops_per_step": flops_step,
              "flops_formula": FLOPS_FORMULA, "matmul_peak_2048_f32_flops": peaks, "sides": sides,
              "ratio_stf_over_saelens": ratio,
              "first_step": {"stf_jax_mse": a, "sae_lens_mse": b, "relative_difference": rel,
                             "tolerance": args.tolerance, "agree": agree},
              "differences": DIFFERENCES}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    print(f"wrote {out}")
    if not agree:
        print(f"error: the first-step MSEs differ by {rel:.2e} > {args.tolerance:g}: the two trainers do not train "
              "the same SAE", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
