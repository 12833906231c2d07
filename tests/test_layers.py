"""The shape of core/: imports run one way along the layers of core/layers.py (no cycles, none upward,
none hidden inside functions but optional heavy packages), argparse stays in the command-line layer, and
modules and functions stay short. Parsed with ast, nothing is imported."""
from __future__ import annotations

import ast
import functools

import pytest

from conftest import REPO
from core import layers

CORE = REPO / "core"
COMMAND_LINE = set(layers.LAYERS[-1][2])


@functools.cache
def modules() -> dict[str, ast.Module]:
    """Every core module's syntax tree, by module name (parsed once)."""
    return {file.stem: ast.parse(file.read_text(encoding="utf-8"), str(file))
            for file in sorted(CORE.glob("*.py")) if file.stem != "__init__"}


def core_imports(node: ast.AST) -> set[str]:
    """The core modules an import statement names (`from core import x`, `from core.x import y`, `import core.x`)."""
    if isinstance(node, ast.ImportFrom) and node.module:
        if node.module == "core":
            return {alias.name for alias in node.names}
        if node.module.startswith("core."):
            return {node.module.split(".")[1]}
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("core.")}
    return set()


def imported_names(node: ast.AST) -> list[str]:
    """The top-level packages an import statement imports."""
    if isinstance(node, ast.ImportFrom):
        return [(node.module or "").split(".")[0]]
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    return []


def function_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """(package, line) of every import statement inside a function."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                found += [(name, node.lineno) for name in imported_names(node)]
    return found


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    return {name: set().union(*(core_imports(node) for node in ast.walk(tree))) - {name}
            for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def upward_imports(graph: dict[str, set[str]], layer_of: dict[str, int]) -> list[str]:
    return [f"{module} (layer {layer_of[module] + 1}) imports {target} (layer {layer_of[target] + 1})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if module in layer_of and target in layer_of and layer_of[target] > layer_of[module]]


def test_every_module_has_a_layer_once():
    declared = [module for _, _, names in layers.LAYERS for module in names]
    assert len(declared) == len(set(declared)), "a module is in two layers"
    assert sorted(declared) == sorted(modules()), "core/layers.py and core/*.py name different modules"


def test_no_import_cycle():
    assert find_cycle(import_graph(modules())) is None


def test_imports_run_down_the_layers():
    assert upward_imports(import_graph(modules()), layers.layer_of()) == []


def test_the_checks_can_fail():
    """The cycle and layer checks on made-up graphs: they find what they are for."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    assert upward_imports({"models": {"store"}, "store": {"models"}}, layers.layer_of()) == [
        "models (layer 3) imports store (layer 6)"]
    tree = ast.parse("def f():\n    from core import store\n    import ray\n")
    assert function_imports(tree) == [("core", 2), ("ray", 3)]


def test_imports_inside_functions_are_optional_heavy_packages_only():
    hidden = [f"{name}.py:{line} imports {package}" for name, tree in modules().items()
              for package, line in function_imports(tree) if package not in layers.LAZY_IMPORTS]
    assert hidden == []


def test_argparse_and_namespaces_stay_in_the_command_line_layer():
    found = []
    for name, tree in modules().items():
        if name in COMMAND_LINE:
            continue
        for node in ast.walk(tree):
            if "argparse" in imported_names(node):
                found.append(f"{name}.py:{node.lineno} imports argparse")
            if isinstance(node, ast.Name) and node.id == "Namespace" or \
                    isinstance(node, ast.Attribute) and node.attr == "Namespace":
                found.append(f"{name}.py:{node.lineno} uses a Namespace")
    assert found == []


def test_modules_are_short():
    long = {file.name: lines for file in CORE.glob("*.py")
            if (lines := len(file.read_text(encoding="utf-8").splitlines())) > layers.MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_short_but_the_documented_optimiser_loops():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > layers.MAX_FUNCTION_LINES and f"{name}.{node.name}" not in layers.LONG_FUNCTIONS:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
    for allowed in layers.LONG_FUNCTIONS:  # the allow-list names real functions, with a docstring
        module, function = allowed.split(".")
        definition = next(node for node in ast.walk(modules()[module])
                          if isinstance(node, ast.FunctionDef) and node.name == function)
        assert ast.get_docstring(definition), allowed


def test_design_doc_shows_the_layers():
    assert layers.markdown() in (REPO / "docs" / "DESIGN.md").read_text(encoding="utf-8"), (
        "docs/DESIGN.md does not show core/layers.py: paste `python -m core.layers` into it")


@pytest.mark.parametrize("script", sorted(path.name for path in REPO.glob("*.py")))
def test_scripts_parse_then_make_one_call(script):
    """A script is argparse (description=__doc__) and one call into core: no imports but core's."""
    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    packages = {package for node in tree.body for package in imported_names(node)}
    assert packages <= {"core"}, packages
    assert "description=__doc__" in (REPO / script).read_text(encoding="utf-8") or \
        "make_parser(__doc__" in (REPO / script).read_text(encoding="utf-8")
