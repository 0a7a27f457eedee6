"""Benchmark helpers shared by scripts/ (bench_align, bench_extract, accelerator_check) and the tests, so the
scripts import code from the package instead of from each other or from tests/.

  stf_jax.bench.align     the seed paper's alignment at scale: planted data, splits, the NumPy/SciPy/
                          scikit-learn reference pipeline and stf_jax's batched one
  stf_jax.bench.device    matmul peaks, FLOP counts, timing, and extraction throughput against PyTorch
  stf_jax.bench.llamacpp  llama.cpp built from the llama-cpp-python sdist (interop tests, extraction peer)
  stf_jax.bench.compare   every number of two experiment directories compared (refactor checks)

Heavy optional dependencies (torch, transformers, scipy, scikit-learn) are imported inside the functions
that use them, so importing these modules needs only NumPy.
"""
