"""llama.cpp for the interop tests and bench_extract's peer: its source from the llama-cpp-python sdist on
PyPI, tools built once.

The sdist vendors llama.cpp's whole tree (tools, `convert_hf_to_gguf.py`, `gguf-py`). It is downloaded
once and extracted under the stf_jax cache (`$STF_JAX_CACHE`, default ~/.cache/stf_jax), and each tool
is built once with cmake into that tree's `build/` folder, so later test runs start at once.

    from stf_jax.bench.llamacpp import source_dir, tool
    converter = source_dir() / "convert_hf_to_gguf.py"
    completion = tool("llama-completion")      # Path to the built binary

Both raise `LlamaCppUnavailable` (tests skip on it) when the sdist cannot be fetched or cmake fails.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python release whose vendored llama.cpp the tests use
PREFIX = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"


class LlamaCppUnavailable(RuntimeError):
    pass


def _root() -> Path:
    base = Path(os.environ.get("STF_JAX_CACHE", Path.home() / ".cache" / "stf_jax"))
    return base / "llama.cpp" / VERSION


@contextmanager
def _locked(name: str):
    """One process at a time downloads or builds (pytest-xdist workers, two test runs)."""
    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def source_dir() -> Path:
    """The extracted llama.cpp tree (downloaded and extracted on first use)."""
    src = _root() / "src"
    if (src / "CMakeLists.txt").exists():
        return src
    with _locked("source"):
        if (src / "CMakeLists.txt").exists():
            return src
        with tempfile.TemporaryDirectory(dir=_root()) as tmp:
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                  f"llama-cpp-python=={VERSION}", "-d", tmp, "-q"], capture_output=True, text=True)
            tarballs = list(Path(tmp).glob("*.tar.gz"))
            if got.returncode != 0 or not tarballs:
                raise LlamaCppUnavailable(f"cannot download the llama-cpp-python sdist: {got.stderr[-500:]}")
            out = Path(tmp) / "src"
            with tarfile.open(tarballs[0]) as tar:
                members = []
                for m in tar.getmembers():
                    if m.name.startswith(PREFIX) and len(m.name) > len(PREFIX):
                        m.name = m.name[len(PREFIX):]
                        members.append(m)
                tar.extractall(out, members=members, filter="data")
            shutil.rmtree(src, ignore_errors=True)
            os.replace(out, src)  # atomic: a half-extracted tree is never seen as done
    return src


def _no_amx() -> list[str]:
    """Compiler flags that keep ggml's AMX kernels out of a native build on x86: on an AMX machine (Sapphire
    Rapids and later) inside a container or VM that does not grant the tile state, llama-completion built
    with -march=native segfaults on the first Q4_K matmul (measured: gemma-3-270m Q4_K_M, exit -11); without
    AMX it runs, with AVX-512 kernels."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]


TARGETS = {  # STF_JAX_LLAMACPP_TARGET: build folder and ggml CPU flags
    # this CPU's vector extensions (AVX-512 where it has them), AMX left out (see _no_amx)
    "native": ("build-noamx", ["-DGGML_NATIVE=ON"]),
    # the x86-64 baseline (SSE2 only): the kernels of the oldest CPU, so tests see llama.cpp's other arithmetic
    "baseline": ("build-baseline", ["-DGGML_NATIVE=OFF", "-DGGML_SSE42=OFF", "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF",
                                    "-DGGML_FMA=OFF", "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF", "-DGGML_AVX512=OFF",
                                    "-DGGML_AVX_VNNI=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF"]),
}


# llama-server is configured too (bench_serve's peer), without its web UI: no npm build, no download of
# prebuilt UI assets (the build machine may be offline); `--no-webui` is all the server needs then
SERVER = ["-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"]


def target() -> str:
    """Which llama.cpp build the tests use: STF_JAX_LLAMACPP_TARGET=native (default) or baseline."""
    name = os.environ.get("STF_JAX_LLAMACPP_TARGET", "native")
    if name not in TARGETS:
        raise LlamaCppUnavailable(f"STF_JAX_LLAMACPP_TARGET={name!r}: choose from {sorted(TARGETS)}")
    return name


def tool(name: str) -> Path:
    """Build (once) and return a llama.cpp binary, e.g. "llama-completion", "llama-cvector-generator",
    "llama-server", for the CPU target `target()` names."""
    src = source_dir()
    folder, flags = TARGETS[target()]
    build = src / folder  # not "build": trees built before AMX was turned off crash on AMX machines
    binary = build / "bin" / name
    if binary.exists():
        return binary
    with _locked("build"):
        if binary.exists():
            return binary
        if shutil.which("cmake") is None:
            raise LlamaCppUnavailable("cmake is not installed")
        cache = build / "CMakeCache.txt"
        if not cache.exists():
            cfg = subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                                  "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                                  *SERVER, "-DBUILD_SHARED_LIBS=OFF", *flags,
                                  *(_no_amx() if target() == "native" else [])],
                                 capture_output=True, text=True)
            if cfg.returncode != 0:
                raise LlamaCppUnavailable(f"cmake configure failed: {cfg.stderr[-1500:]}")
        elif name == "llama-server" and "LLAMA_BUILD_SERVER:BOOL=ON" not in cache.read_text(errors="replace"):
            # a tree configured before the server was built here: turn it on (the other settings stay cached;
            # the tools already built are not rebuilt)
            cfg = subprocess.run(["cmake", "-S", str(src), "-B", str(build), *SERVER], capture_output=True, text=True)
            if cfg.returncode != 0:
                raise LlamaCppUnavailable(f"cmake configure (server on) failed: {cfg.stderr[-1500:]}")
        made = subprocess.run(["cmake", "--build", str(build), "--target", name, "-j", str(os.cpu_count() or 2)],
                              capture_output=True, text=True)
        if made.returncode != 0 or not binary.exists():
            raise LlamaCppUnavailable(f"building {name} failed: {(made.stdout + made.stderr)[-1500:]}")
    return binary


# ------------------------------------------------------------------ comparing llama.cpp's steering with stf_jax's

def complete(model_path, prompt: str, n_tokens: int, *extra) -> str:
    """llama-completion's greedy text (raw prompt, no chat, seed 0, 2 threads); `extra`: more flags, e.g.
    "--control-vector-scaled", "FILE:1"."""
    got = subprocess.run([str(tool("llama-completion")), "-m", str(model_path), "-p", prompt, "-n", str(n_tokens),
                          "--temp", "0", "-no-cnv", "--no-display-prompt", "--no-warmup", "-s", "0", "-t", "2",
                          *map(str, extra)], capture_output=True, text=True, timeout=600)
    if got.returncode != 0:
        raise RuntimeError(f"llama-completion failed: {got.stderr[-2000:]}")
    return got.stdout.strip()


def steering_shift(model, directions: dict, strength: float, prompt: str, texts) -> "list[float]":
    """Per text: token-mean log P(text | prompt) under stf_jax steered with `directions` (stored scale, every
    position, as llama.cpp adds a control vector) at `strength`, minus unsteered: > 0 where the text is what the
    steering favours. Scoring llama.cpp's texts this way checks its steering without comparing greedy words,
    which drift with its quantized CPU kernels."""
    import numpy as np

    from ..steer.inject import make_intervention, position_mask
    from ..steer.propensity import mean_logprobs

    layers = sorted(directions)
    vectors = np.stack([np.asarray(directions[lay], np.float32) for lay in layers])

    def steering(mask):
        return make_intervention(model.config, layers, vectors, strength, position_mask(mask), normalize=False)

    prompts = [prompt] * len(texts)
    return list(mean_logprobs(model, prompts, list(texts), steering) - mean_logprobs(model, prompts, list(texts)))
