"""Serving load: `python -m stf_jax.serve` under concurrent steered requests, against one-at-a-time and llama-server.

    python scripts/bench_serve.py --model gemma3-270m --clients 32 --tokens 64 --out /tmp/bench_serve.json

Bounded and loopback only; it stops by itself (every request has a timeout, every server it starts is stopped
in `finally`). Steps:
(0) --clients steering vectors for the model: random unit directions at one mid layer, each scaled to
    0.15 x that layer's typical |h| (`typical_norms` on the shipped corpus), saved as llama.cpp control
    vectors v0.gguf ... in a temporary library. They are random directions on purpose: the cost of a
    decoding step does not depend on the direction. Client i asks for vector v{i} at its own strength
    (alternating signs, |s| in 0.5..1.5), so every row of the batch is steered differently.
(1) stf_jax's server (--slots, --context) on a free 127.0.0.1 port: /health, one warm-up request per prompt
    length bucket, then two warm-up bursts of all the requests at once (2 tokens each; the first compiles
    the batched prefill shapes the server meets under load, so no compile lands in the measurement; both
    bursts' times are reported), then
    (a) --clients concurrent clients, one request each: --tokens new tokens, temperature 0;
    (b) the same requests one at a time;
    (c) one streamed request alone: time to first token and the gap between tokens;
    (d) with --single-slot, the one-at-a-time run again on a server started with --slots 1.
    During (a) /metrics is polled: the decoding step time with every slot busy comes from its 10 s window.
(2) llama.cpp's `llama-server` (built from the source the tests use; continuous batching, -np slots,
    -c slots x context, -t --threads) on the model's GGUF file: unsteered, then restarted with
    `--control-vector-scaled v0.gguf:1` (one vector for every request: it cannot vary it per request);
    the same concurrent clients (and, unsteered, the one-at-a-time run unless --no-llamacpp-sequential),
    `ignore_eos` so that each request makes --tokens tokens (stf_jax's server is sent it too); the same
    warm-up bursts first.
It prints the CPU, the model and a Markdown table (tokens/s counts the completion tokens the servers report;
latency is per request, send to full answer) and writes everything to --out as JSON. On a shared machine each
measured run first waits (--quiet-wait) for the CPU to be idle, and the table says how many cores the server
and everything else used meanwhile ("other load"); the JSON records the git commit and a hash of the serving
and model sources, and the script warns when they changed during the run.

stf_jax computes in float32 from the dequantized GGUF weights; llama.cpp runs the quantized GGUF as is
(Q4_K_M / Q4_1 kernels), so the comparison is of the two servers as shipped, not of equal arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SCALE = 0.15  # vector length, in units of the layer's typical |h|


# ----------------------------------------------------------------------------------------------- the workload

def make_workload(model_name: str, n: int, directory: Path, seed: int = 0):
    """(prompts, per-prompt token counts, strengths, vector info): n vectors saved as directory/v{i}.gguf."""
    from stf_jax.core.norms import typical_norms
    from stf_jax.core.vector import SteeringVector
    from stf_jax.data.corpus import load_corpus
    from stf_jax.models.loading import load_model

    model = load_model(model_name, progress=False)
    layer = model.config.n_layers // 2
    corpus = [t.text for t in load_corpus()]
    typical = typical_norms(model, corpus[:32], [layer])[layer]
    rng = np.random.default_rng(seed)
    for i in range(n):
        v = rng.standard_normal(model.config.d_model)
        v = (v / np.linalg.norm(v) * SCALE * typical).astype(np.float32)
        SteeringVector({layer: v}, model=model_name, trait=f"random-direction-{i}").save(directory / f"v{i}.gguf")
    prompts, lengths = [], []
    for i in range(n):
        words, target = corpus[(7 * i) % len(corpus)].split(), 16 + (5 * i) % 13  # 16..28 tokens
        k = 1
        while k < len(words) and len(model.tokenizer(" ".join(words[:k]))["input_ids"]) < target:
            k += 1
        prompts.append(" ".join(words[:k]))
        lengths.append(len(model.tokenizer(prompts[-1])["input_ids"]))
    strengths = [round((1 if i % 2 == 0 else -1) * (0.5 + (i % 11) / 10), 2) for i in range(n)]
    info = {"layer": layer, "typical_norm": typical, "length": SCALE * typical, "scale": f"{SCALE} x typical |h|",
            "directions": "random unit directions (seeded); throughput does not depend on the direction"}
    del model
    return prompts, lengths, strengths, info


# ----------------------------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own process group, its output in a log file; stop() ends that group."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path, env=None):
        self.name, self.argv, self.port = name, argv, port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)

    def wait_healthy(self, timeout: float) -> float:
        import httpx

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(self.base + "/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return time.perf_counter() - self.started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()


# ----------------------------------------------------------------------------------------------- the CPU's other load

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_s() -> float:
    """CPU-seconds all cores have been busy (from /proc/stat; 0 where there is none)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(v) - v[3] - v[4]) / TICK


def process_cpu_s(pid: int | None) -> float:
    """CPU-seconds process `pid` (all its threads) has used; this process when None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_quiet(limit: float, cores: float = 0.3, window: float = 3.0) -> dict:
    """Wait (at most `limit` s) until the CPU is idle but for < `cores` cores over `window` s, so that other
    work on a shared machine does not land in a measurement; -> what was seen."""
    t0, seen = time.perf_counter(), None
    while True:
        b0, s0 = busy_s(), process_cpu_s(None)
        time.sleep(window)
        seen = (busy_s() - b0 - (process_cpu_s(None) - s0)) / window
        if seen < cores or time.perf_counter() - t0 >= limit:
            return {"waited_s": time.perf_counter() - t0, "other_cores": seen, "quiet": seen < cores}


# ----------------------------------------------------------------------------------------------- clients

def one_request(url: str, body: dict, timeout: float) -> dict:
    """POST one completion; {latency, tokens, finish, text, error, timings}."""
    import httpx

    t0 = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout) as client:
            r = client.post(url, json=body)
        latency = time.perf_counter() - t0
        data = r.json()
        if r.status_code != 200:
            return {"latency": latency, "tokens": 0, "error": f"{r.status_code}: {str(data)[:300]}"}
        choice = data["choices"][0]
        return {"latency": latency, "tokens": int(data["usage"]["completion_tokens"]),
                "prompt_tokens": int(data["usage"].get("prompt_tokens", 0)), "finish": choice.get("finish_reason"),
                "text": choice.get("text", ""), "timings": data.get("timings"), "error": None}
    except Exception as exc:  # a timeout or a dropped connection is a result, not a crash
        return {"latency": time.perf_counter() - t0, "tokens": 0, "error": f"{type(exc).__name__}: {exc}"}


def streamed_request(url: str, body: dict, timeout: float) -> dict:
    """One streamed completion alone: time to first text chunk and the median gap between chunks."""
    import httpx

    stamps, t0 = [], time.perf_counter()
    try:
        with httpx.Client(timeout=timeout) as client, client.stream("POST", url, json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        stamps.append(time.perf_counter())
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    gaps = np.diff(stamps)
    return {"error": None, "chunks": len(stamps), "ttft_s": stamps[0] - t0 if stamps else None,
            "total_s": time.perf_counter() - t0, "gap_median_s": float(np.median(gaps)) if len(gaps) else None,
            "gap_p95_s": float(np.percentile(gaps, 95)) if len(gaps) else None}


def warm_bursts(url: str, bodies: list[dict], timeout: float, n: int = 2) -> list[float]:
    """Send every body at once with max_tokens 2, n times; -> each burst's wall time."""
    walls = []
    for _ in range(n):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(bodies)) as pool:
            got = list(pool.map(lambda b: one_request(url, {**b, "max_tokens": 2}, timeout), bodies))
        walls.append(time.perf_counter() - t0)
        errors = [g["error"] for g in got if g["error"]]
        if errors:
            raise RuntimeError(f"warm-up burst failed: {errors[0]}")
    return walls


def run_load(name: str, url: str, bodies: list[dict], concurrent: bool, timeout: float, server: "Server",
             quiet: float, poll=None) -> dict:
    """Send `bodies` all at once (one thread each, released together) or one after another; before, wait up to
    `quiet` s for an idle CPU; during, account the CPU time of the server, this process and everything else."""
    before = wait_quiet(quiet)
    if not before["quiet"]:
        print(f"  (the CPU is not idle: {before['other_cores']:.2f} cores busy elsewhere; measuring anyway)",
              flush=True)
    cpu0 = (busy_s(), process_cpu_s(server.proc.pid), process_cpu_s(None))
    polls: list[dict] = []
    stop_poll = threading.Event()
    poller = None
    if poll is not None:
        def watch():
            import httpx

            while not stop_poll.wait(0.25):
                try:
                    polls.append({"t": time.perf_counter() - t0, **httpx.get(poll, timeout=2).json()})
                except Exception:
                    pass

        poller = threading.Thread(target=watch, daemon=True)
    t0 = time.perf_counter()
    if poller:
        poller.start()
    if concurrent:
        gate = threading.Barrier(len(bodies))

        def client(body):
            gate.wait(timeout=60)
            return one_request(url, body, timeout)

        with ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(client, bodies))
    else:
        results = [one_request(url, b, timeout) for b in bodies]
    wall = time.perf_counter() - t0
    stop_poll.set()
    if poller:
        poller.join(timeout=5)
    cpu1 = (busy_s(), process_cpu_s(server.proc.pid), process_cpu_s(None))
    server_s, client_s = cpu1[1] - cpu0[1], cpu1[2] - cpu0[2]
    cpu = {"server_cores": server_s / wall, "bench_client_cores": client_s / wall,
           "other_cores": (cpu1[0] - cpu0[0] - server_s - client_s) / wall, "quiet_before": before}
    return {**summarize(name, results, wall, polls), "cpu": cpu}


def summarize(name: str, results: list[dict], wall: float, polls=()) -> dict:
    ok = [r for r in results if r["error"] is None]
    lat = np.asarray([r["latency"] for r in ok]) if ok else np.asarray([np.nan])
    tokens = sum(r["tokens"] for r in ok)
    finishes: dict[str, int] = {}
    for r in ok:
        finishes[str(r.get("finish"))] = finishes.get(str(r.get("finish")), 0) + 1
    return {"setup": name, "requests": len(results), "ok": len(ok),
            "errors": [r["error"] for r in results if r["error"]],
            "tokens": tokens, "tokens_per_request": sorted({r["tokens"] for r in ok}), "finish_reasons": finishes,
            "wall_s": wall, "tokens_per_s": tokens / wall, "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p95_s": float(np.percentile(lat, 95)), "latency_min_s": float(lat.min()),
            "latency_max_s": float(lat.max()), "latencies_s": [r["latency"] for r in results],
            "texts": [r.get("text") for r in results], "timings": [r.get("timings") for r in results],
            "metrics_polls": list(polls)}


# ----------------------------------------------------------------------------------------------- the run

def source_state() -> dict:
    """The code being measured: git commit, and a hash of the serving and model files as they are on disk now
    (uncommitted edits included), so that runs on a changing tree can be told apart."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "stf_jax"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", []
    files = sorted((root / "stf_jax" / "serve").glob("*.py")) + sorted((root / "stf_jax" / "models").glob("*.py"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()[:16]
    return {"commit": commit, "uncommitted": sorted(line[3:] for line in dirty if line.strip()),
            "serve_and_models_sha256": digest}


def steady_state(polls: list[dict]) -> dict | None:
    """From /metrics polls during the concurrent run: when the last request got a slot, and the decoding step
    time once the server's 10 s tokens/s window holds only steps with every admitted request busy."""
    polls = [p for p in polls if isinstance(p.get("active_slots"), int)]
    if not polls:
        return None
    active = max(p["active_slots"] for p in polls)
    admitted = next((p for p in polls if p["active_slots"] == active and not p.get("queue")), None)
    if admitted is None or active == 0:
        return None
    out = {"active": active, "admitted": active, "admitted_after_s": admitted["t"],
           "prefill_s": admitted["t"] / active}
    full = [p["tokens_per_s"] for p in polls if p["active_slots"] == active and p["t"] >= admitted["t"] + 10.0]
    if full:
        tps = float(np.median(full))
        out.update(tokens_per_s=tps, step_s=active / tps if tps else None, polls_in_full_window=len(full))
    return out


def table(rows: list[dict]) -> str:
    from stf_jax.markdown import table as md_table

    ref = next((r for r in rows if r["setup"].startswith("stf_jax concurrent")), None)
    header = ["setup", "requests", "tokens", "wall s", "tokens/s", "p50 s", "p95 s", "tokens/s vs stf_jax concurrent",
              "server cores", "other load (cores)"]
    return md_table(header, [[r["setup"], f"{r['ok']}/{r['requests']}", r["tokens"], f"{r['wall_s']:.1f}",
                              f"{r['tokens_per_s']:.1f}", f"{r['latency_p50_s']:.2f}", f"{r['latency_p95_s']:.2f}",
                              f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref and ref["tokens_per_s"] else "-",
                              f"{r['cpu']['server_cores']:.2f}", f"{r['cpu']['other_cores']:.2f}"] for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m", help="registry name with a GGUF file (gemma3-270m, "
                                                                "smollm2-135m)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, one request each")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--slots", type=int, default=None, help="decode slots of both servers (default: --clients)")
    parser.add_argument("--context", type=int, default=256, help="tokens per slot (llama-server: -c slots x this)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="stf_jax server's weights and KV cache dtype")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama-server -t")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-at-a-time runs")
    parser.add_argument("--sequential-requests", type=int, default=None,
                        help="how many of the requests the one-at-a-time runs send (default: all)")
    parser.add_argument("--single-slot", action="store_true", help="also send the requests one at a time to a "
                        "stf_jax server started with --slots 1 (a step there computes one row, not --slots)")
    parser.add_argument("--no-llamacpp", action="store_true", help="skip llama-server")
    parser.add_argument("--no-llamacpp-sequential", action="store_true", help="skip llama-server one at a time")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait, before each measured "
                        "run, for the CPU to be idle (a shared machine); 0: do not wait")
    parser.add_argument("--out", help="write everything as JSON here")
    args = parser.parse_args(argv)
    slots = args.slots or args.clients
    if args.clients < 1 or args.tokens < 1:
        parser.error("--clients and --tokens must be >= 1")

    from stf_jax.bench.device import cpu_flags
    from stf_jax.models.registry import resolve

    report: dict = {"cpu": cpu_flags(), "source": source_state(), "model": args.model, "clients": args.clients,
                    "tokens": args.tokens, "dtype": args.dtype, "slots": slots, "context": args.context,
                    "argv": sys.argv, "rows": []}
    print(f"code: {report['source']}")
    print(f"CPU: {report['cpu']}\nmodel: {args.model} (stf_jax in {args.dtype}); {args.clients} clients x "
          f"{args.tokens} new tokens, temperature 0; {slots} slots, context {args.context} per slot", flush=True)
    servers: list[Server] = []
    rows = report["rows"]
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        library = tmp / "vectors"
        library.mkdir()
        t0 = time.perf_counter()
        prompts, lengths, strengths, info = make_workload(args.model, args.clients, library)
        report.update(vectors=info, prompts=prompts, prompt_tokens=lengths, strengths=strengths)
        print(f"vectors: {args.clients} {info['directions']}, layer {info['layer']}, |v| = {info['length']:.3g} "
              f"({info['scale']}, typical |h| {info['typical_norm']:.4g}); client i: v{{i}} at strength "
              f"{strengths[:4]}...; prompts {min(lengths)}-{max(lengths)} tokens ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        try:
            # ------------------------------------------------------------------ stf_jax
            port = free_port()
            argv_s = [sys.executable, "-m", "stf_jax.serve", "--model", args.model, "--vectors", str(library),
                      "--dtype", args.dtype, "--host", "127.0.0.1", "--port", str(port), "--slots", str(slots),
                      "--context", str(args.context)]
            report["stf_jax_command"] = " ".join(argv_s)
            server = Server("stf_jax", argv_s, port, tmp)
            servers.append(server)
            report["stf_jax_ready_s"] = server.wait_healthy(900)
            print(f"stf_jax server ready in {report['stf_jax_ready_s']:.0f} s (load + compile)", flush=True)
            url = server.base + "/v1/completions"

            def body(i: int, steered: bool = True) -> dict:
                b = {"prompt": prompts[i], "max_tokens": args.tokens, "temperature": 0, "seed": i,
                     "ignore_eos": True}  # a server without the field ignores it (and may stop early)
                if steered:
                    b["steering"] = [{"vector": f"v{i}", "strength": strengths[i]}]
                return b

            from stf_jax.serve.engine import prefill_bucket

            t0 = time.perf_counter()
            warm = {}
            for i, n in enumerate(lengths):  # one request per prefill bucket: its program is compiled here
                warm.setdefault(prefill_bucket(n, args.context), i)
            for i in warm.values():
                got = one_request(url, {**body(i), "max_tokens": 4}, args.timeout)
                if got["error"]:
                    raise RuntimeError(f"stf_jax warm-up failed: {got['error']}\n{server.tail()}")
            bodies = [body(i) for i in range(args.clients)]
            report["stf_jax_warm_bursts_s"] = warm_bursts(url, bodies, args.timeout)
            report["stf_jax_warmup_s"] = time.perf_counter() - t0
            print("stf_jax warm-up bursts of all requests at once, 2 tokens each: "
                  + ", ".join(f"{w:.1f} s" for w in report["stf_jax_warm_bursts_s"]), flush=True)
            n_seq = min(args.sequential_requests or args.clients, args.clients)
            rows.append(run_load(f"stf_jax concurrent, {args.clients} vectors", url, bodies, True, args.timeout, server,
                                 args.quiet_wait, poll=server.base + "/metrics"))
            print(table(rows[-1:]), flush=True)
            if not args.no_sequential:
                rows.append(run_load(f"stf_jax one at a time, {slots} slots", url, bodies[:n_seq], False,
                                     args.timeout, server, args.quiet_wait))
                print(table(rows[-1:]), flush=True)
            wait_quiet(args.quiet_wait)
            report["stf_jax_stream_probe"] = streamed_request(url, body(0), args.timeout)
            report["stf_jax_metrics_after"] = __import__("httpx").get(server.base + "/metrics", timeout=5).json()
            server.stop()
            servers.remove(server)
            if args.single_slot and not args.no_sequential:
                port = free_port()
                argv_1 = [*argv_s[:argv_s.index("--port")], "--port", str(port), "--slots", "1", "--context",
                          str(args.context)]
                report["stf_jax_single_slot_command"] = " ".join(argv_1)
                server = Server("stf_jax-1slot", argv_1, port, tmp)
                servers.append(server)
                server.wait_healthy(900)
                url = server.base + "/v1/completions"
                for i in warm.values():
                    one_request(url, {**body(i), "max_tokens": 4}, args.timeout)
                rows.append(run_load("stf_jax one at a time, 1 slot", url, bodies[:n_seq], False, args.timeout,
                                     server, args.quiet_wait))
                print(table(rows[-1:]), flush=True)
                server.stop()
                servers.remove(server)

            # ------------------------------------------------------------------ llama.cpp
            if not args.no_llamacpp:
                from stf_jax.bench.llamacpp import VERSION, LlamaCppUnavailable, tool

                try:
                    binary = tool("llama-server")
                except LlamaCppUnavailable as exc:
                    binary = None
                    report["llamacpp_unavailable"] = str(exc)
                    print(f"llama-server unavailable: {exc}", flush=True)
                if binary is not None:
                    report["llamacpp_version"] = f"llama.cpp vendored in llama-cpp-python {VERSION}"
                    gguf = resolve(args.model)
                    for label, extra in (("unsteered", []),
                                         ("one control vector (v0 at 1)",
                                          ["--control-vector-scaled", f"{library / 'v0.gguf'}:1"])):
                        port = free_port()
                        argv_l = [str(binary), "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
                                  "-t", str(args.threads), "-np", str(slots), "-c", str(slots * args.context),
                                  "--cont-batching", "--no-webui", "--seed", "0", *extra]
                        report.setdefault("llamacpp_commands", []).append(" ".join(argv_l))
                        server = Server(f"llama-server-{len(servers)}-{label.split()[0]}", argv_l, port, tmp)
                        servers.append(server)
                        ready = server.wait_healthy(300)
                        lurl = server.base + "/v1/completions"

                        def lbody(i: int) -> dict:
                            return {"prompt": prompts[i], "max_tokens": args.tokens, "temperature": 0, "seed": i,
                                    "ignore_eos": True, "cache_prompt": False}

                        got = one_request(lurl, {**lbody(0), "max_tokens": 4}, args.timeout)
                        if got["error"]:
                            raise RuntimeError(f"llama-server warm-up failed: {got['error']}\n{server.tail()}")
                        bodies = [lbody(i) for i in range(args.clients)]
                        bursts = warm_bursts(lurl, bodies, args.timeout)
                        report.setdefault("llamacpp_warm_bursts_s", {})[label] = bursts
                        print(f"llama-server ({label}) ready in {ready:.0f} s; warm-up bursts "
                              + ", ".join(f"{w:.1f} s" for w in bursts), flush=True)
                        rows.append(run_load(f"llama-server concurrent, {label}", lurl, bodies, True, args.timeout,
                                             server, args.quiet_wait))
                        print(table(rows[-1:]), flush=True)
                        if not extra and not (args.no_sequential or args.no_llamacpp_sequential):
                            rows.append(run_load(f"llama-server one at a time, {label}", lurl, bodies[:n_seq], False,
                                                 args.timeout, server, args.quiet_wait))
                            print(table(rows[-1:]), flush=True)
                            wait_quiet(args.quiet_wait)
                            report["llamacpp_stream_probe"] = streamed_request(lurl, lbody(0), args.timeout)
                        report.setdefault("llamacpp_logs", {})[label] = server.tail(6000)
                        server.stop()
                        servers.remove(server)
        finally:
            for server in servers:
                server.stop()

    # ------------------------------------------------------------------ the account
    print()
    print(f"CPU: {report['cpu']}")
    print(f"model: {args.model} (stf_jax in {args.dtype}); {args.clients} clients x {args.tokens} new tokens "
          f"(temperature 0); {slots} slots x {args.context} context; vectors: random directions at layer "
          f"{info['layer']}, |v| = {SCALE} x typical |h|")
    print(table(rows))
    conc = next((r for r in rows if r["setup"].startswith("stf_jax concurrent")), None)
    steady = steady_state(conc["metrics_polls"]) if conc else None
    if steady:
        report["stf_jax_steady_state"] = steady
        load = (f"; then {steady['tokens_per_s']:.1f} tokens/s with {steady['active']} slots busy = one decoding "
                f"step every {steady['step_s'] * 1e3:.0f} ms" if steady.get("step_s") else
                "; the run was too short for a full 10 s /metrics window")
        print(f"stf_jax under load (/metrics every 0.25 s): all {steady['admitted']} requests in slots after "
              f"{steady['admitted_after_s']:.1f} s (~{steady['prefill_s'] * 1e3:.0f} ms per request, prefills "
              f"included){load}")
    probe = report.get("stf_jax_stream_probe")
    if probe and not probe.get("error"):
        print(f"stf_jax, one streamed request alone on the {slots}-slot server: first token {probe['ttft_s']:.2f} s, "
              f"then one token every {probe['gap_median_s'] * 1e3:.0f} ms (median)")
    probe = report.get("llamacpp_stream_probe")
    if probe and not probe.get("error"):
        print(f"llama-server, one streamed request alone: first token {probe['ttft_s']:.2f} s, then one token every "
              f"{probe['gap_median_s'] * 1e3:.1f} ms (median)")
    short = sorted({r["setup"] for r in rows if r["ok"] and r["tokens"] < r["ok"] * args.tokens})
    if short:
        print(f"note: some requests stopped (end of text) before {args.tokens} tokens in: {', '.join(short)} "
              "(a server that ignores ignore_eos); tokens/s counts the tokens made")
    after = source_state()
    if after != report["source"]:
        report["source_after"] = after
        print("WARNING: the stf_jax sources changed while this ran (see source / source_after in the JSON): the "
              "servers started at different times may have run different code")
    if args.out:
        from stf_jax.core.atomic import atomic_write_json

        atomic_write_json(Path(args.out), report, default=str)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
