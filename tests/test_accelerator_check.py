"""scripts/accelerator_check.py in its reduced CPU mode, so the one-call GPU check never rots between GPUs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("accelerator_check", ROOT / "scripts" / "accelerator_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reduced_check_runs_every_section_and_reports(tmp_path):
    check = _load_script()
    assert check.main(["--reduced", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "accelerator_report.json").read_text())
    sections = report["sections"]
    assert list(sections) == list(check.SECTIONS)
    assert not [n for n, s in sections.items() if "error" in s or "skipped" in s]
    dev = sections["device"]
    assert dev["platform"] == "cpu" and dev["peak_bf16_tflops"] > 0
    parity = sections["parity"]
    assert parity["all_pass"] and len(parity["rows"]) == 4
    assert all(r["f32"] < 1e-4 and r["torch_bf16"] > 1e-3 for r in parity["rows"])  # bf16 really ran
    ext = sections["extraction"]
    for key in ("stf_xla_tokens_per_s", "torch_user_tokens_per_s", "torch_equal_tokens_per_s"):
        assert ext[key] > 0, key
    assert ext["stf_best"] == "xla" and "stf_cudnn_tokens_per_s" not in ext  # no cuDNN on CPU
    assert all(r["forward_rows_per_s"] > 0 for r in sections["steering"]["rows"])
    assert all(r["concurrent_tokens_per_s"] > 0 and r["p95_s"] >= r["p50_s"] for r in sections["serving"]["rows"])
    align = sections["alignment"]
    assert align["trials"] == 2 and 0.2 < align["mean_test_centered"] < 0.9
    sae = sections["sae"]
    assert sae["steps"] >= 3 and sae["tokens_per_s"] > 0 and sae["tflops"] > 0 and 0 <= sae["fvu"] < 1
    assert 0 < sae["mfu_vs_float32_peak"] < 2
    md = (tmp_path / "accelerator_report.md").read_text()
    assert "## parity" in md and "## alignment" in md


def test_budget_skips_later_sections_and_still_writes(tmp_path):
    check = _load_script()
    report = check.run_check(tmp_path, reduced=True, only=["device", "alignment"], budget_s=0.0)
    assert report["sections"]["device"]["skipped"].startswith("time budget")
    assert "skipped" in report["sections"]["alignment"]
    assert json.loads((tmp_path / "accelerator_report.json").read_text())["sections"].keys() == {"device", "alignment"}
