"""The house: no import cycles among usef's modules.

Every import statement counts, wherever it is: module level, inside functions (lazy imports
only postpone a cycle to the first call), under ``if TYPE_CHECKING`` (the type checker still
sees the cycle). ``from usef.pkg import name`` depends on ``usef.pkg.name`` when that is a
module, else on ``usef.pkg`` itself (whose whole body, including its lazy imports, provides
the name). A submodule's implicit import of its parent package is not an edge: packages
re-export their submodules, so that edge would make every package a trivial cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import usef

PACKAGE_DIR = Path(usef.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the importing module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        return {f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names}
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return {node.args[0].value}  # importlib.import_module("usef.x") with a literal name
    return set()


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            found |= _imported(node, name, path.name == "__init__.py", modules)
        graph[name] = {dep for dep in found if dep in modules and dep != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "usef.hub" in graph["usef.checkpoint"] or "usef.checkpoint" in graph["usef.hub"]
    assert "usef.api" in graph["usef"]  # the lazy façade import inside usef.__getattr__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_among_usef_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_checkpoint_files_know_no_model_classes():
    graph = import_graph()
    assert not {dep for dep in graph["usef.checkpoint_io"] if dep.startswith("usef.models")}
    assert "usef.checkpoint_io" in graph["usef.models.base"]


def test_version_module_agrees_with_the_package():
    from usef._version import __version__

    assert __version__ == usef.__version__
