"""The top-level API: five verbs (load_model, extract, fit_map / transfer, steer, report), callable from
`stf_jax`, documented, and lazy (importing stf_jax, or reaching a verb, does not import JAX)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import stf_jax

VERBS = ("load_model", "train_vector", "extract", "fit_map", "transfer", "steer", "report")


@pytest.mark.parametrize("verb", VERBS)
def test_verbs_are_documented_callables(verb):
    fn = getattr(stf_jax, verb)
    assert callable(fn) and verb in stf_jax.__all__
    assert fn.__doc__ and len(fn.__doc__.strip()) > 40
    assert f"    {verb}(" in stf_jax.__doc__  # the package docstring lists it, one line
    assert list(inspect.signature(fn).parameters)[0] != "self"


@pytest.mark.parametrize("verb", ["extract", "steer", "report"])
def test_callable_packages_stay_packages(verb):
    package = getattr(stf_jax, verb)
    assert package is sys.modules[f"stf_jax.{verb}"] and hasattr(package, "__path__")  # python -m, submodules
    assert callable(package) and f"stf_jax.{verb}(" in package.__doc__  # its docstring shows the call


def test_import_and_verb_lookup_do_not_import_jax():
    code = ("import sys, stf_jax; assert 'jax' not in sys.modules; "
            "stf_jax.extract, stf_jax.steer, stf_jax.report, stf_jax.extract.layers; "
            "from stf_jax.extract import resolve_layers; from stf_jax.models.config import DecoderConfig; "
            "print(sorted(m for m in ('jax', 'flax', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_extract_verb_on_a_tiny_model(tiny_model_dir, tmp_path):
    """stf_jax.extract reads a dataset by name as --pairs does and writes what extract_pairs writes."""
    from stf_jax.extract import ExtractOptions, extract_pairs
    from stf_jax.extract.inputs import read_pairs

    model = str(tiny_model_dir("llama_gqa_untied_rope3"))  # 4 blocks: 0.5 -> 2, -1 -> 4
    summaries = stf_jax.extract(model, "shipped", tmp_path / "verb", traits=["formality", "verbosity"],
                                per_trait=2, layers="0.5,-1", batch_size=4, progress=False)
    assert [s.texts for s in summaries] == [8]
    manifest = json.loads((tmp_path / "verb" / "manifest.json").read_text())
    entry = manifest["models"][0]
    assert entry["layers"] == [2, 4] and manifest["source"]["dataset"] == "shipped"

    pairs, _ = read_pairs("shipped", ["formality", "verbosity"], 2)
    extract_pairs([model], pairs, tmp_path / "direct", ExtractOptions(layers=(2, 4), batch_size=4, progress=False))
    direct = json.loads((tmp_path / "direct" / "manifest.json").read_text())["models"][0]
    for layer in ("2", "4"):
        a = load_file(str(tmp_path / "verb" / entry["files"][layer]))
        b = load_file(str(tmp_path / "direct" / direct["files"][layer]))
        np.testing.assert_array_equal(a["vectors"], b["vectors"])


def test_report_verb_calls_write_report(tmp_path):
    from stf_jax.report import ReportInputError

    with pytest.raises(ReportInputError):
        stf_jax.report(tmp_path)


MOVED = [("stf_jax.extract.layers", "stf_jax.core.layers", "resolve_layers"),
         ("stf_jax.steer.stats", "stf_jax.core.stats", "bootstrap"),
         ("stf_jax.align.inputs", "stf_jax.extract.rundir", "find_models"),
         ("stf_jax.extract.run", "stf_jax.extract.driver", "extract_pairs"),
         ("stf_jax.align.trait_transfer", "stf_jax.align.carry_traits", "transferred_trait_vectors"),
         ("stf_jax.run", "stf_jax.experiment", "run_experiment")]


@pytest.mark.parametrize("old,new,name", MOVED)
def test_moved_modules_still_import_with_a_deprecation(old, new, name):
    code = (f"import warnings; warnings.simplefilter('always')\n"
            f"import {new}\nfrom {old} import {name} as a\nfrom {new} import {name} as b\nassert a is b")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert f"{old} moved to {new}" in got.stderr and "DeprecationWarning" in got.stderr


def test_old_export_names_still_work_with_a_deprecation(tmp_path):
    code = ("import warnings; warnings.simplefilter('always'); import numpy as np\n"
            "from stf_jax.steer.export import export_control_vector, load_control_vector\n"
            f"p = export_control_vector({str(tmp_path / 'v.gguf')!r}, {{3: np.ones(8, np.float32)}}, model_hint='llama')\n"
            "cv = load_control_vector(p); assert cv.layers == [3] and cv.model_hint == 'llama'")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert "stf_jax.steer.export moved" in got.stderr


def test_run_alias_runs_the_experiment_cli():
    got = subprocess.run([sys.executable, "-m", "stf_jax.run", "--help"], capture_output=True, text=True)
    assert got.returncode == 0 and "python -m stf_jax.experiment" in got.stdout


def test_load_map_is_one_thing():
    import stf_jax.transfer

    assert stf_jax.load_map is stf_jax.transfer.load_map is stf_jax.transfer.load_map_set
