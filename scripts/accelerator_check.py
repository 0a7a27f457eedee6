"""One-call accelerator check: parity, extraction throughput (MFU), steering sweeps and alignment on one device.

    python scripts/accelerator_check.py --out accelerator_report            # on a GPU, < 8 minutes
    python scripts/accelerator_check.py --reduced --out /tmp/acc            # CPU smoke mode (the test suite runs it)

Writes `accelerator_report.json` and `accelerator_report.md` into --out after every section, so a run cut
short still leaves what it measured. Sections, in order (each one's failure is recorded, the rest still run):

device      the device, library versions, and the matmul peak measured here (bf16 and f32, JAX and PyTorch):
            the physical limit every throughput below is compared with.
extraction  the Llama-3-8B shape with random bf16 weights: stf_jax's jitted last-token extraction (both
            attention implementations) against PyTorch bf16 with sdpa, written two ways: as a user would
            (`output_hidden_states=True`, every layer and the LM head) and the equal-work reference (the
            blocks up to the layer only, no LM head). tokens/s, ratios, MFU against the measured peak and
            the datasheet peak.
parity      every tiny family checkpoint of the test suite (random weights, left and right padding) and
            the two shipped models' shapes (random weights: the real GGUF files exceed what a device run can
            carry; their real-weight parity is tested on CPU) against transformers on the same device:
            stf_jax f32, and bf16 with each attention implementation (einsum "xla", cuDNN flash "cudnn"),
            next to transformers' own bf16 error (the bf16 noise floor). Max relative error over every
            hidden state and the logits.
steering    α-sweep throughput of the steering evaluation (PrefixScorer: the prefix up to the steered layer
            once, the rest per (vector, α)) on the shipped shapes: rows x α per second.
serving     the serving engine with 32 busy slots, each request its own steering vector, 64 tokens each,
            against the same requests one at a time (f32 and bf16, shipped shapes): tokens/s, p50/p95.
alignment   the seed paper's scale (65,329 pairs, widths 3072/4096/4096, k = 1300, 5 trials, 6 directed
            pairs; scripts/bench_align.py's data and pipeline), stf_jax on the device, compile included.
sae         TopK SAE training (`stf_jax.sae.train.fit_sae`: Adam, unit decoder rows, AuxK) at the Llama-3-8B
            width (d_in 4096, 16x = 65,536 latents, k 64, 4096 tokens a step) on tokens built on the device
            from planted sparse features, for --sae-seconds: tokens/s, achieved TFLOP/s and MFU against the
            measured f32 / bf16 matmul peaks, and the FVU it reaches (the features are recoverable). The
            issue asks for a 30-minute run: --sae-seconds 1800 --budget 2400 where the device time allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # PyTorch shares the card in the same process
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402

from stf_jax.bench.device import (datasheet_peak, extraction_throughput, matmul_peaks,  # noqa: E402
                                  torch_device)

SHAPES = json.loads((ROOT / "scripts" / "shipped_shapes.json").read_text())


# ------------------------------------------------------------------ device

def device_section(args) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    dev = jax.devices()[0]
    n = 1024 if args.reduced else 8192
    out = {"platform": dev.platform, "device_kind": dev.device_kind, "devices": len(jax.devices()),
           "host": platform.node(), "cpus": os.cpu_count(), "matmul_n": n,
           "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version()}}
    if torch.cuda.is_available():
        out["versions"]["cudnn (torch)"] = torch.backends.cudnn.version()
        out["torch_device"] = torch.cuda.get_device_name(0)
    peaks = matmul_peaks(n, reps=5)
    for key, flops in peaks.items():
        lib, _, dtype = key.partition("_")
        if lib in ("jax", "torch") and isinstance(flops, float):
            out[f"{lib}_matmul_{dtype}_tflops"] = flops / 1e12
        else:
            out[key] = flops
    out["peak_bf16_tflops"] = max(out["jax_matmul_bfloat16_tflops"], out["torch_matmul_bfloat16_tflops"])
    out["datasheet_bf16_tflops"] = datasheet_peak(dev.device_kind)
    return out


# ------------------------------------------------------------------ parity

_BUILT: dict[str, str] = {}


def _save_random_shape(name: str, hf: dict, out_dir: str) -> str:
    """A shipped model's shape with random weights (norms randomized so (1 + w) vs w matters)."""
    import torch
    import transformers

    from stf_jax.testing import _byte_tokenizer

    config = transformers.AutoConfig.for_model(**hf)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    _byte_tokenizer().save_pretrained(out_dir)
    return out_dir


def _model_dir(name: str, tmp: str) -> str:
    """Build (once per run) a saved checkpoint: stf_jax.testing's TINY or FAMILY_TINY, or a shipped shape."""
    if name in _BUILT:
        return _BUILT[name]
    from stf_jax import testing

    out = os.path.join(tmp, name)
    if name in testing.TINY:
        testing.build_tiny(name, out)
    elif name in testing.FAMILY_TINY:
        testing.build_family_tiny(name, out)
    else:
        _save_random_shape(name, SHAPES[name.removesuffix("-shape")], out)
    _BUILT[name] = out
    return out


def _torch_model(model_dir: str, dtype: str):
    """transformers' model on the device, eager attention (the reference the CPU parity tests use)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                dtype=getattr(torch, dtype)).to(torch_device()).eval()


def _torch_states(model, ids, mask):
    """transformers' forward: hidden states [L+1, B, S, D] and logits, as f32 numpy."""
    import torch

    dev = model.device
    ids_t = torch.as_tensor(ids, dtype=torch.long, device=dev)
    mask_t = torch.as_tensor(mask, dtype=torch.long, device=dev)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=(mask_t.cumsum(-1) - 1).clamp(min=0),
                    output_hidden_states=True)
    return np.stack([h.float().cpu().numpy() for h in out.hidden_states]), out.logits.float().cpu().numpy()


def _error(states, logits, ref_states, ref_logits, mask) -> float:
    from stf_jax.testing import max_rel_error

    errs = [max_rel_error(states[i], ref_states[i], mask) for i in range(len(ref_states))]
    return max(errs + [max_rel_error(logits, ref_logits, mask)])


def _ours(model, ids, mask, attention: str):
    model = dataclasses.replace(model, config=dataclasses.replace(model.config, attention=attention))
    logits, states = model.logits(ids, mask, layers="all")
    return np.asarray(states, np.float32), np.asarray(logits, np.float32)


def parity_section(args) -> dict:
    import jax

    import stf_jax
    from stf_jax import testing
    from stf_jax.models.decoder import attention_implementation

    tiny = sorted(testing.TINY) + sorted(n for n in testing.FAMILY_TINY if n != "qwen2_full")
    shapes = [f"{n}-shape" for n in SHAPES]
    names = (tiny[:1] + ["gemma3_pattern"] if args.reduced else tiny) + ([] if args.reduced else shapes)
    batch, seq = (2, 64) if args.reduced else (4, 256)
    rows = []
    for name in names:
        model_dir = _model_dir(name, args.tmp)
        f32 = stf_jax.load_model(model_dir, progress=False)
        bf16 = stf_jax.load_model(model_dir, dtype="bfloat16", progress=False)
        impls = ["xla"] + (["cudnn"] if attention_implementation(bf16.config, bf16.dtype) == "cudnn" else [])
        vocab = min(f32.config.vocab_size, testing.VOCAB)
        torch_f32, torch_bf16 = _torch_model(model_dir, "float32"), _torch_model(model_dir, "bfloat16")
        for padding in ("right", "left"):
            ids, mask = testing.random_batch(np.random.default_rng(len(rows)), batch, seq, vocab, padding)
            ref = _torch_states(torch_f32, ids, mask)
            row = {"model": name, "padding": padding, "batch": batch, "seq": seq,
                   "f32": _error(*_ours(f32, ids, mask, "xla"), *ref, mask),
                   "torch_bf16": _error(*_torch_states(torch_bf16, ids, mask), *ref, mask)}
            for impl in impls:
                try:
                    row[f"bf16_{impl}"] = _error(*_ours(bf16, ids, mask, impl), *ref, mask)
                except Exception as e:  # noqa: BLE001 - recorded; the row fails
                    row[f"bf16_{impl}"] = f"error: {type(e).__name__}: {str(e)[:200]}"
            row["pass"] = bool(row["f32"] < 1e-4 and all(
                isinstance(row[f"bf16_{i}"], float) and row[f"bf16_{i}"] < max(3 * row["torch_bf16"], 3e-2)
                for i in impls))
            rows.append(row)
            print(f"  parity {name} {padding}: " + ", ".join(f"{k} {v:.1e}" for k, v in row.items()
                                                                if isinstance(v, float)), flush=True)
        del f32, bf16, torch_f32, torch_bf16
        jax.clear_caches()
    return {"rows": rows, "all_pass": all(r["pass"] for r in rows),
            "note": "max |ours - transformers f32| / max |transformers f32| over every hidden state and the "
                    "logits at real tokens; torch_bf16 = transformers' own bf16 run against its f32 run. "
                    "Pass: f32 < 1e-4 and each bf16 < max(3 x torch_bf16, 3e-2)."}


# ------------------------------------------------------------------ extraction throughput

def extraction_section(args, peak=None, datasheet=None) -> dict:
    if args.reduced:
        return extraction_throughput("llama-3-8b-instruct", -2, 4, 64, 2, tiny=True)
    return extraction_throughput("llama-3-8b-instruct", -6, args.batch, args.seq, args.steps, tiny=False,
                                 peak_tflops=peak, datasheet_tflops=datasheet)


# ------------------------------------------------------------------ steering sweeps

def steering_section(args) -> dict:
    import jax

    import stf_jax
    from stf_jax.steer.propensity import PrefixScorer

    names = ["gemma3_pattern"] if args.reduced else [f"{n}-shape" for n in SHAPES]
    pairs, alphas = (8, 3) if args.reduced else (128, 7)
    rows = []
    for name in names:
        model = stf_jax.load_model(_model_dir(name, args.tmp), dtype="bfloat16", progress=False)
        layer = max(1, (2 * model.config.n_layers) // 3)
        prompts = [f"Write a note about topic {i}:" for i in range(pairs)]
        pos = [f" Dear colleague, regarding item {i}, kindly find the details enclosed." for i in range(pairs)]
        neg = [f" hey, about thing {i}, here's the stuff lol" for i in range(pairs)]
        t0 = time.perf_counter()
        scorer = PrefixScorer(model, layer, prompts, pos, neg, max_tokens=16, width=64)
        vector = np.random.default_rng(0).standard_normal(model.config.d_model).astype(np.float32)
        scorer.propensity(vector, 1.0)  # compile
        setup = time.perf_counter() - t0
        sweep = np.linspace(-4, 4, alphas)
        t0 = time.perf_counter()
        for a in sweep:
            scorer.propensity(vector, float(a))
        sweep_s = time.perf_counter() - t0
        rows.append({"model": name, "dtype": "bfloat16", "layer": layer, "pairs": pairs, "alphas": alphas,
                     "width": 64, "setup_and_compile_s": setup, "sweep_s": sweep_s,
                     "forward_rows_per_s": 2 * pairs * alphas / sweep_s,
                     "alpha_points_per_s": alphas / sweep_s})
        print(f"  steering {name}: {rows[-1]['forward_rows_per_s']:,.0f} steered rows/s", flush=True)
        del model, scorer
        jax.clear_caches()
    return {"rows": rows, "note": "one α point = the propensity of every pair (positive and negative continuation "
                                  "rows) with the vector added at the layer; the prefix up to it runs once"}


# ------------------------------------------------------------------ serving

def serving_section(args) -> dict:
    """The serving engine under load (stf_jax.serve.engine, without HTTP: the GPU image need not have
    FastAPI): every slot busy with its own steering vector and strength, fixed-length completions, then the
    same requests one at a time. The HTTP server and llama-server comparison is scripts/bench_serve.py."""
    import threading

    import jax

    import stf_jax
    from stf_jax.serve.engine import Engine, Sampling

    names = ["gemma3_pattern"] if args.reduced else [f"{n}-shape" for n in SHAPES]
    clients, tokens, alone = (4, 8, 2) if args.reduced else (32, 64, 4)
    rows = []
    for name in names:
        for dtype in (("float32",) if args.reduced else ("float32", "bfloat16")):
            model = stf_jax.load_model(_model_dir(name, args.tmp), dtype=dtype, progress=False)
            cfg = model.config
            rng = np.random.default_rng(0)
            steers = rng.standard_normal((clients, cfg.n_layers, cfg.d_model)).astype(np.float32)
            steers[:, : cfg.n_layers // 2] = 0  # each client: its own vector in every upper layer
            prompts = [[(7 * i + j) % 200 + 3 for j in range(16 + i % 16)] for i in range(clients)]
            engine = Engine(model, slots=clients, context=256, stop_token_ids=[]).start()
            engine.ready.wait()
            sampling = Sampling(max_tokens=tokens, ignore_eos=True)
            for n in (16, 32):  # compile the prefill buckets outside the measurement
                engine.complete(prompts[0][:1] * n, sampling=Sampling(max_tokens=2))
            done, latencies = threading.Semaphore(0), []

            def listen(start):
                def on(event):
                    if event.kind != "text":
                        latencies.append(time.perf_counter() - start)
                        done.release()
                return on

            t0 = time.perf_counter()
            for ids, steer in zip(prompts, steers):
                engine.submit(ids, steer, sampling, listen(time.perf_counter()))
            for _ in prompts:
                done.acquire()
            wall = time.perf_counter() - t0
            t1 = time.perf_counter()
            for ids, steer in zip(prompts[:alone], steers[:alone]):
                engine.complete(ids, steer, sampling)
            alone_s = (time.perf_counter() - t1) / alone
            engine.stop()
            rows.append({"model": name, "dtype": dtype, "slots": clients, "context": 256, "tokens_each": tokens,
                         "concurrent_tokens_per_s": clients * tokens / wall,
                         "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
                         "alone_tokens_per_s": tokens / alone_s,
                         "batch_gain": clients * tokens / wall / (tokens / alone_s)})
            print(f"  serving {name} {dtype}: {rows[-1]['concurrent_tokens_per_s']:,.0f} tokens/s with {clients} "
                  f"steered slots, {rows[-1]['alone_tokens_per_s']:,.0f} alone", flush=True)
            del model, engine
            jax.clear_caches()
    return {"rows": rows, "note": "random weights of the shipped shapes; every request its own vector (upper half "
                                  "of the layers) and length; ignore_eos, so every request makes tokens_each tokens"}


# ------------------------------------------------------------------ alignment

def alignment_section(args) -> dict:
    import itertools

    import jax

    from stf_jax.bench import align as bench_align

    scale, trials = (0.02, 2) if args.reduced else (args.align_scale, 5)
    k = round(1300 * scale)
    t0 = time.perf_counter()
    xs, traits = bench_align.make_data(scale, 0)
    data_s = time.perf_counter() - t0
    splits = [bench_align.stratified_split(traits, s) for s in range(trials)]
    pairs = list(itertools.permutations(range(len(xs)), 2))
    ours, wall, cpu = bench_align.run_stf(xs, splits, pairs, k, batch_size=2 if args.reduced else 6)
    return {"scale": scale, "pairs": len(traits), "widths": "/".join(str(x.shape[1]) for x in xs), "k": k, "trials": trials,
            "directed_pairs": len(pairs), "platform": jax.devices()[0].platform, "data_generation_s": data_s,
            "stf_wall_s": wall, "stf_cpu_s": cpu, "mean_test_cos": float(ours["test"].mean()),
            "mean_test_centered": float(ours["test_centered"].mean())}


def sae_section(args) -> dict:
    import jax
    import jax.numpy as jnp

    from stf_jax.sae.model import SAEConfig, decode, encode, fvu
    from stf_jax.sae.train import TrainOptions, fit_sae

    d, mult, k, batch = (64, 4, 8, 512) if args.reduced else (4096, 16, 64, 4096)
    cfg = SAEConfig(d_in=d, d_sae=d * mult, k=k)
    n_feat = cfg.d_sae  # as many planted directions as latents, k of them in each token
    feats = jax.random.normal(jax.random.key(1), (n_feat, d), jnp.float32)
    feats = feats / jnp.linalg.norm(feats, axis=1, keepdims=True)

    @jax.jit
    def tokens(key):  # [batch, d]: k planted features with positive weights, on the device
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (batch, k), 0, n_feat)
        w = jax.random.uniform(k2, (batch, k), minval=0.5, maxval=2.0)
        return jnp.einsum("bk,bkd->bd", w, feats[idx])

    def stream(start):
        for i in range(start, 10**9):
            yield tokens(jax.random.key(1000 + i))

    seconds = 5.0 if args.reduced else args.sae_seconds
    probe = fit_sae(cfg, stream, TrainOptions(tokens=batch * 4, batch=batch, progress=False))
    rate = 3 / max(probe.seconds - probe.first_step_seconds, 1e-6)  # steps/s after the first (compiling) one
    fit = fit_sae(cfg, stream, TrainOptions(tokens=batch * max(int(seconds * rate), 4), batch=batch, progress=False))
    timed, steady = fit.steps_run - 1, fit.seconds - fit.first_step_seconds  # the first step compiles
    flops = 12.0 * batch * d * cfg.d_sae * timed  # encoder + decoder matmuls, forward and backward
    x = tokens(jax.random.key(7))
    x_hat = decode(fit.params, encode(cfg, fit.params, x))
    out = {"d_in": d, "d_sae": cfg.d_sae, "k": k, "batch": batch, "steps": fit.steps_run, "seconds": fit.seconds,
           "first_step_s": fit.first_step_seconds, "tokens_per_s": timed * batch / steady, "tflops": flops / steady / 1e12,
           "fvu": fvu(np.asarray(x), np.asarray(x_hat)), "dead_fraction": fit.dead_fraction,
           "flops_formula": "12 x batch x d_in x d_sae per step"}
    dev = getattr(args, "device_report", None) or {}
    for dtype in ("float32", "bfloat16"):
        peak = dev.get(f"jax_matmul_{dtype}_tflops")
        if peak:
            out[f"mfu_vs_{dtype}_peak"] = out["tflops"] / peak
    return out


# ------------------------------------------------------------------ report

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def markdown(report: dict) -> str:
    from stf_jax.markdown import table as md_table

    lines = ["# stf_jax accelerator check", ""]
    dev = report.get("device", {})
    lines.append(f"Device: **{dev.get('device_kind', '?')}** ({dev.get('platform', '?')}), "
                 f"{'reduced CPU mode' if report['reduced'] else 'full mode'}, started {report['started']}.")
    for name, sec in report["sections"].items():
        lines += ["", f"## {name}", ""]
        if "error" in sec or "skipped" in sec:
            lines.append("```\n" + (sec.get("error") or sec["skipped"]).strip() + "\n```")
            continue
        rows = sec.get("rows")
        if rows:
            header = list(dict.fromkeys(k for r in rows for k in r))
            lines.append(md_table(header, [[_fmt(r.get(h, "")) for h in header] for r in rows]))
        scalars = [[k, _fmt(v)] for k, v in sec.items() if k != "rows" and not isinstance(v, (dict, list))]
        scalars += [[f"{k}.{kk}", _fmt(vv)] for k, v in sec.items() if isinstance(v, dict) for kk, vv in v.items()]
        if scalars:
            lines += ["", md_table(["quantity", "value"], scalars)]
    return "\n".join(lines) + "\n"


SECTIONS = ("device", "extraction", "parity", "steering", "serving", "alignment", "sae")


def run_check(out: str | os.PathLike, reduced: bool = False, only=None, budget_s: float = 460.0,
              batch: int = 32, seq: int = 512, steps: int = 5, align_scale: float = 1.0,
              sae_seconds: float = 60.0) -> dict:
    """Run the sections in order, writing the report after each; a section past the budget is skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(reduced=reduced, batch=batch, seq=seq, steps=steps, align_scale=align_scale,
                              sae_seconds=sae_seconds, tmp=tempfile.mkdtemp(prefix="accelerator_check_"))
    report = {"reduced": reduced, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
    start = time.monotonic()
    for name in SECTIONS:
        if only and name not in only:
            continue
        if time.monotonic() - start > budget_s:
            report["sections"][name] = {"skipped": f"time budget of {budget_s:.0f}s spent"}
            _write(out, report)
            continue
        print(f"[{time.monotonic() - start:6.1f}s] {name}", flush=True)
        t0 = time.perf_counter()
        try:
            if name == "extraction":
                dev = report["sections"].get("device", {})
                sec = extraction_section(args, dev.get("peak_bf16_tflops"), dev.get("datasheet_bf16_tflops"))
            else:
                sec = globals()[f"{name}_section"](args)
        except Exception:  # noqa: BLE001 - recorded in the report; the other sections still run
            sec = {"error": traceback.format_exc(limit=6)}
            print(sec["error"], flush=True)
        sec["seconds"] = time.perf_counter() - t0
        if name == "device":
            report["device"] = args.device_report = sec
        report["sections"][name] = sec
        report["total_s"] = time.monotonic() - start
        _write(out, report)
    return report


def _write(out: Path, report: dict) -> None:
    from stf_jax.core.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "accelerator_report.json", report)
    atomic_write_text(out / "accelerator_report.md", markdown(report))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="accelerator_report", help="folder for the report [accelerator_report]")
    parser.add_argument("--reduced", action="store_true", help="small shapes: a CPU smoke run in about a minute")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--budget", type=float, default=460.0,
                        help="seconds after which later sections are skipped (recorded as skipped) [460]")
    parser.add_argument("--batch", type=int, default=32, help="extraction rows per forward [32]")
    parser.add_argument("--seq", type=int, default=512, help="extraction tokens per row [512]")
    parser.add_argument("--steps", type=int, default=5, help="timed forwards per measurement (median) [5]")
    parser.add_argument("--align-scale", type=float, default=1.0, help="alignment scale [1.0 = paper scale]")
    parser.add_argument("--sae-seconds", type=float, default=60.0,
                        help="SAE training time (the issue's long run: 1800, with --budget above it) [60]")
    args = parser.parse_args(argv)
    report = run_check(args.out, args.reduced, args.only, args.budget, args.batch, args.seq, args.steps,
                       args.align_scale, args.sae_seconds)
    print((Path(args.out) / "accelerator_report.md").read_text())
    failed = [n for n, s in report["sections"].items() if "error" in s]
    parity = report["sections"].get("parity", {})
    if failed or parity.get("all_pass") is False:
        print(f"accelerator check: errors in {failed}; parity all pass: {parity.get('all_pass')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
