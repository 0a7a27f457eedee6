"""Shared fixtures: tiny random Hugging Face checkpoints (one per family and attention variant)
saved with `save_pretrained`, and the two real shipped models. The builders live in stf_jax.testing."""

from __future__ import annotations

import os

import pytest

from stf_jax.testing import ShippedMaps, build_tiny

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite checks the reference paths (XLA's dots); tests/test_cpu_gemm.py opts into MKL's bf16 GEMMs itself
os.environ.setdefault("STF_JAX_CPU_GEMM", "xla")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Callable: family variant name -> directory of a saved tiny random HF model (built once)."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_tiny(name, tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="session")
def shipped_maps(tmp_path_factory):
    """The shipped models' map set (stf_jax.testing.ShippedMaps), fitted once per session."""
    return ShippedMaps(tmp_path_factory.mktemp("shipped_maps"))
