"""The layout's rules, read from the import graph of the sources (stdlib ``ast``): no import
cycles between modules, packages pointing one way (``noise`` <- ``models`` <- the engine in
``util`` <- ``analysis`` and ``train.py``), ``util`` never importing ``analysis``, and no
library module importing ``train.py``. Entry points (``train.py`` and the ``__main__`` module of
a package, run as ``python -m pkg``) may import anything, and no module imports them. Imports
inside functions count like any other: a function-level import is no way around a rule."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("noise", "models", "data", "util", "analysis")

#: What each package may import from the project (besides itself).
ALLOWED = {
    "noise": set(),
    "models": {"noise"},
    "data": set(),
    "util": {"noise", "models", "data"},
    "analysis": {"noise", "models", "data", "util"},
    "train": {"noise", "models", "data", "util", "analysis"},
}

#: Known exceptions, each with its reason; the test fails when one is no longer needed.
EXCEPTIONS: set[tuple[str, str]] = set()


def is_entry_point(module: str) -> bool:
    """A script run by a user, never imported by a library module: ``train.py`` and a
    package's ``__main__`` (``python -m util.local_run`` hands the runner train.py's
    experiment)."""
    return module == "train" or module.endswith(".__main__")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def source_files() -> list[Path]:
    files = [ROOT / "train.py"]
    for pkg in PACKAGES:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (at any depth of the file), resolved to module
    names (``from pkg import name`` counts as ``pkg.name`` when that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != me:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = source_files()
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_the_imports_it_must(graph):
    """Guards the reader itself: imports it must find (relative, from-package, nested)."""
    assert "util.engine.experiment" in graph["util.engine.walk"]
    assert "util.config" in graph["util.engine.walk"]
    assert "noise.operator" in graph["noise.placement"]
    assert "util.engine.midpoint" in graph["analysis.midpoint"]
    assert "train" in graph["util.local_run.__main__"]  # inside a function
    assert "util.local_run" in graph["util.local_run.__main__"]


def test_no_import_cycles_between_modules(graph):
    cycles = []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_packages_point_one_way(graph):
    wrong = sorted((src, dst) for src, targets in graph.items() for dst in targets
                   if not is_entry_point(src) and top(dst) != top(src)
                   and top(dst) not in ALLOWED[top(src)] and (src, dst) not in EXCEPTIONS)
    assert wrong == []


def test_the_known_exceptions_are_still_needed(graph):
    assert all(dst in graph[src] for src, dst in EXCEPTIONS)


def test_the_engine_never_imports_analysis_and_no_library_module_imports_train(graph):
    assert not [s for s, t in graph.items() if top(s) == "util" and not is_entry_point(s)
                and any(top(d) == "analysis" for d in t)]
    assert sorted((s, "train") for s, t in graph.items() if "train" in t) == sorted(
        {("util.local_run.__main__", "train")} | EXCEPTIONS)


def test_nothing_imports_an_entry_point(graph):
    assert not [(s, d) for s, t in graph.items() for d in t
                if is_entry_point(d) and not is_entry_point(s)]
