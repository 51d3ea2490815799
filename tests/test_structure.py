"""The package's shape: every module imports, the dotslab -> dotslab imports form no cycle (function-level
imports included), and no function is longer than 60 lines.

Run: .venv/bin/python -m pytest tests/test_structure.py
"""
import ast
import graphlib
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dotslab"
MAX_FUNCTION_LINES = 60


def module_files() -> dict[str, Path]:
    """dotslab's modules by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dotslab modules ``name`` imports anywhere in its body (top level, functions, classes)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            found.update(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def test_the_import_graph_finds_a_function_level_cycle(tmp_path):
    """The checker itself: a cycle closed only by an import inside a function is still a cycle."""
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import g\n")
    modules = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    graph = {m: imported_modules(m, p, modules) for m, p in modules.items()}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_dotslab_imports_form_no_cycle():
    modules = module_files()
    graph = {m: imported_modules(m, p, modules) for m, p in modules.items()}
    assert sum(map(len, graph.values())) > 50, "the checker found almost no imports"
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


@pytest.mark.parametrize("name", sorted(m for m in module_files() if not m.endswith("__main__")))  # that one runs the CLI
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:  # an optional extra (vllm, trl) that this environment lacks
        if (e.name or "").startswith("dotslab"):
            raise
        pytest.skip(f"{name} needs {e.name}")


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in module_files().values()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these functions:\n" + "\n".join(long)
