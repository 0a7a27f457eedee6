"""The house's floors, checked from the import statements themselves (every `import`, also inside functions).

The shared primitives (the floor: layer grammar, vector files, typical |h|, atomic writes, statistics, errors,
paths, locks) import no stage; models and data import only the floor; each stage imports only stages below it;
no module imports itself back through others (no cycle); scripts import the package, never each other, and
never edit sys.path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOOR = {"stf_jax", "errors", "safe_paths", "locks", "markdown", "options", "core"}
RANK = {**{name: 0 for name in FLOOR}, "models": 1, "data": 1, "extract": 2, "align": 3, "sae": 3, "transfer": 4,
        "steer": 5, "judge": 6, "serve": 6, "report": 7, "experiment": 8,
        # tools above the house: test builders, benchmarks, the deprecated `stf_jax.run` alias
        "testing": 9, "bench": 9, "run": 9}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "stf_jax").rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every stf_jax module `name` imports (a `from x import y` names x.y when y is a module, else x)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "stf_jax" and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "stf_jax"


def test_every_module_has_a_floor():
    unranked = sorted({_stage(m) for m in MODULES} - set(RANK))
    assert not unranked, f"modules outside the layering table: {unranked}; give them a rank in RANK"


def test_no_module_imports_a_stage_above_it():
    bad = [f"{a} -> {b}" for a, bs in GRAPH.items() for b in bs
           if RANK[_stage(b)] > RANK[_stage(a)] or (RANK[_stage(a)] == 1 and _stage(a) != _stage(b)
                                                    and RANK[_stage(b)] == 1)]
    assert not bad, "imports that go up a floor (or across models/data):\n" + "\n".join(sorted(bad))


def test_the_floor_imports_only_the_floor():
    floor = [m for m in MODULES if _stage(m) in FLOOR]
    assert {"stf_jax.core.layers", "stf_jax.core.vectorfile", "stf_jax.core.vector", "stf_jax.core.norms",
            "stf_jax.core.atomic", "stf_jax.core.stats"} <= set(floor)
    bad = [f"{a} -> {b}" for a in floor for b in GRAPH[a] if _stage(b) not in FLOOR]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph: every component is one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_scripts_import_the_package_not_each_other(script):
    tree = ast.parse((ROOT / "scripts" / script).read_text())
    siblings = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & (siblings | {"conftest", "tests"}), f"{script} imports {names & (siblings | {'conftest'})}"
    assert "sys.path" not in ast.unparse(tree), f"{script} edits sys.path"
