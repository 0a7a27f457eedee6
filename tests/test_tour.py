"""The README's Python tour runs as written: the two shipped models are loaded once each, the carried vector
steers gemma3 (its text differs from the unsteered text), and the saved file is a control vector of gemma3."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"


def tour_code() -> str:
    text = README.read_text()
    match = re.search(r"<!-- tour -->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no <!-- tour --> python block"
    return match.group(1)


def test_tour_is_short():
    lines = [line for line in tour_code().splitlines() if line.strip()]
    assert len(lines) <= 12, len(lines)


def test_readme_tour_runs(tmp_path, monkeypatch):
    import stf_jax.models.loading as loading

    from stf_jax import SteeringVector

    loads: list[str] = []
    real = loading.load_hf_dir

    def counting(*args, **kwargs):
        loads.append(str(kwargs.get("name", args[0])))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_hf_dir", counting)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(tour_code(), "README tour", "exec"), scope)  # noqa: S102 — the README's own lines

    assert sorted(loads) == ["gemma3-270m", "smollm2-135m"], loads  # each model loaded once, nothing again
    plain, steered, w = scope["plain"], scope["steered"], scope["w"]
    assert plain != steered, (plain, steered)
    assert w.model == "gemma3-270m" and w.layers == [12] and w.units == "typical_norm"
    saved = SteeringVector.load(tmp_path / "formality_gemma3.gguf")
    assert saved.layers == [12] and saved.model_hint == w.model_type == "gemma3_text" and saved.units == "residual"
    expected = w.directions[12] * 0.15 * w.typical_norms[12]  # residual units: the default strength stored
    np.testing.assert_allclose(saved.directions[12], expected, rtol=1e-5)
    assert saved.trait == "formality"
