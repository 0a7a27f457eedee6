"""scripts/bench_sae.py in smoke mode: both trainers (stf_jax, sae-lens) run on the same real activations, report
a positive throughput, and agree on the first step's MSE from the same initial weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_sae_smoke(tmp_path):
    out = tmp_path / "bench_sae.json"
    got = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_sae.py"), "--tokens", "4096", "--steps", "2",
                          "--batch", "512", "--latents", "2x", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["sides"]) == {"stf_jax", "sae_lens"}
    for side in report["sides"].values():
        assert side["tokens_per_s"] > 0 and side["gflops"] > 0
    assert report["d_sae"] == 2 * report["d_in"]
    first = report["first_step"]
    assert first["agree"] and first["relative_difference"] <= 1e-4, first
    assert "| stf-jax |" in got.stdout and "| sae-lens |" in got.stdout and "stf_jax / sae-lens:" in got.stdout
