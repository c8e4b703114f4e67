"""The shape of the code: no import cycles (between modules or between packages), small modules and functions,
one assignment per statement, and a README layout that names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "cnnbench"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph(type_only: bool = False) -> dict[str, set[str]]:
    """Module -> the cnnbench modules it imports, at the top or inside functions (``type_only``: also under
    ``if TYPE_CHECKING:``). ``from pkg import name`` counts as importing ``pkg`` (its ``__init__`` runs) and, when
    ``name`` is a module, that module too."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if type_only else _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base in mods:
                    graph[name].add(base)
                    graph[name] |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
    for name in graph:
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def unit(module: str) -> str:
    """The part of the package a module belongs to: its subpackage (cnnbench.data, ...) or itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else module


def test_the_graph_sees_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["cnnbench.train"]  # the walk found the package and its imports
    assert cycles(graph) == []


def package_graph(type_only: bool = True) -> dict[str, set[str]]:
    """Unit (subpackage or top-level module) -> the units it imports."""
    packages: dict[str, set[str]] = {}
    for module, imported in import_graph(type_only).items():
        packages.setdefault(unit(module), set()).update(unit(m) for m in imported)
    for name in packages:
        packages[name].discard(name)
    return packages


def test_no_import_cycle_between_packages_not_even_for_annotations() -> None:
    packages = package_graph(type_only=True)
    assert {"cnnbench.data", "cnnbench.engine", "cnnbench.models", "cnnbench.transfer"} <= set(packages)
    assert cycles(packages) == []


# The floors of the house: a unit imports only units on its own floor or below (annotations included). Floor 0
# needs nothing of cnnbench; config, models and data sit below evaluation, evaluation below the engine, the engine
# below what builds runs from it, and the commands on top.
FLOORS = {
    0: {"cnnbench", "cnnbench.errors", "cnnbench.signals", "cnnbench.overrides", "cnnbench.anatomy",
        "cnnbench.precision", "cnnbench.versions"},
    1: {"cnnbench.fileio", "cnnbench.cli", "cnnbench.config"},
    2: {"cnnbench.manifest", "cnnbench.rundir", "cnnbench.tracking"},
    3: {"cnnbench.models", "cnnbench.data"},
    4: {"cnnbench.evaluation", "cnnbench.explain"},
    5: {"cnnbench.engine"},
    6: {"cnnbench.transfer", "cnnbench.pictures", "cnnbench.provenance"},
    7: {"cnnbench.assemble", "cnnbench.resolve", "cnnbench.results", "cnnbench.finished_run", "cnnbench.leaderboard",
        "cnnbench.report_files", "cnnbench.sweep"},
    8: {"cnnbench.train", "cnnbench.commands", "cnnbench.__main__"},
}


def test_imports_flow_down_the_floors() -> None:
    floor = {u: f for f, units in FLOORS.items() for u in units}
    packages = package_graph(type_only=True)
    assert set(packages) <= set(floor), f"units without a floor: {sorted(set(packages) - set(floor))}"
    upward = sorted(f"{u} (floor {floor[u]}) -> {v} (floor {floor[v]})" for u, imported in packages.items()
                    for v in imported if floor[v] > floor[u])
    assert upward == []


def test_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}")
    assert long_modules == [] and long_functions == []


def test_no_statement_packs_three_assignments_into_one() -> None:
    """``a, b, c = x, y, z`` hides three statements in one line (unpacking a returned tuple is fine)."""
    packed = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) and \
                    isinstance(node.value, ast.Tuple) and len(node.targets[0].elts) >= 3:
                packed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert packed == []


def test_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[\w/]+\.py\b|[\w]+/(?=\s)", layout))
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert {f for f in files if Path(f).name not in named and f not in named} == set()
    for entry in re.findall(r"^\s*(\w+/)", layout, flags=re.M):  # every folder it lists exists
        assert (ROOT / entry).is_dir() or (PACKAGE / entry).is_dir(), entry


def test_every_script_says_what_it_is_for_in_its_first_line() -> None:
    scripts = sorted((ROOT / "scripts").rglob("*.py"))
    assert len(scripts) > 15
    silent = [str(p.relative_to(ROOT)) for p in scripts
              if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip().splitlines()[:1]]
    assert silent == []
    loose = [p.name for p in (ROOT / "scripts").glob("*.py") if p.name not in ("__init__.py", "runs.py")]
    assert loose == [], "scripts live in a folder named after their purpose"
