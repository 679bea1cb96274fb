"""The import graph of labmig has no cycles.

Imports run one way: widgets and commands over the controller and the library, the
library never back up. A cycle can stay hidden at run time behind an import inside a
function (it runs late, once both modules are loaded), so the graph here is read from the
source, not from what Python happened to load:

    module_names(root)        every module under a package directory, by dotted name
    imported_modules(...)     what one module imports from the package: at module level and
                              inside functions and classes alike; only imports under
                              ``if TYPE_CHECKING:`` are left out (they never run)
    import_graph(root)        module -> the package's modules it imports
    find_cycles(graph)        one shortest cycle through every edge that lies on a cycle,
                              each as a path ``a -> b -> a``

and the library (everything but labmig.cli, labmig.commands and labmig.widgets) never
imports the command line or the widgets.

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so an import
of a submodule is also an edge to each enclosing package, except the importer's own
enclosing packages (those are already being imported when it runs).
"""
from __future__ import annotations

import ast
import textwrap
from collections import deque
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "labmig"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under *package_dir*."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking_guard(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in *tree* that can run, wherever it sits."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            return
        if isinstance(node, ast.If) and _is_type_checking_guard(node.test):
            for child in node.orelse:       # the else branch does run
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _absolute_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement names."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of *known* that *module* (source at *path*) imports, directly."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = _absolute_base(module, is_package, node)
        targets.add(base)
        for alias in node.names:            # `from pkg import submodule`
            if f"{base}.{alias.name}" in known:
                targets.add(f"{base}.{alias.name}")
    own_packages = {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
    if is_package:
        own_packages.add(module)
    edges: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):    # the enclosing packages run first
            name = ".".join(parts[:end])
            if name in known and name not in own_packages and name != module:
                edges.add(name)
    return edges


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, for the package at *package_dir*."""
    modules = module_names(package_dir)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """Breadth-first: the shortest path start .. goal, or None."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path: list[str] = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = previous[step]
            return path[::-1]
        for successor in sorted(graph.get(node, ())):
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    return None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """For every edge a -> b on a cycle, the shortest cycle through it: [a, b, ..., a].

    Cycles found from several edges are reported once (rotated to start at their
    smallest module name). The list is empty when the graph is acyclic.
    """
    cycles: dict[tuple[str, ...], list[str]] = {}
    for source in sorted(graph):
        for target in sorted(graph[source]):
            back = _shortest_path(graph, target, source)
            if back is None:
                continue
            ring = [source, *back[:-1]]
            first = ring.index(min(ring))
            ring = ring[first:] + ring[:first]
            cycles.setdefault(tuple(ring), ring + [ring[0]])
    return list(cycles.values())


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_labmig_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert "labmig.model" in graph and "labmig.sim.engine" in graph, "labmig's modules not found"
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) in labmig:\n{describe(cycles)}"


FRONT_ENDS = ("labmig.cli", "labmig.__main__", "labmig.commands", "labmig.widgets")


def _is_front_end(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FRONT_ENDS)


def test_the_library_never_imports_the_command_line_or_the_widgets() -> None:
    """Commands and widgets are views over the library; it must not reach back up to them."""
    graph = import_graph(PACKAGE_DIR)
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if not _is_front_end(module) for target in targets if _is_front_end(target))
    assert not upward, "library modules importing front ends:\n" + "\n".join(upward)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root / "toy"


def test_a_cycle_hidden_in_a_function_is_reported(tmp_path: Path) -> None:
    """A lazy import inside a function closes a cycle as much as one at the top."""
    package = _write_package(tmp_path, {
        "toy/__init__.py": "",
        "toy/a.py": "from .b import helper\n",
        "toy/b.py": """\
            def helper():
                from toy import a
                return a
            """,
        "toy/c.py": "from . import a\n",
    })
    cycles = find_cycles(import_graph(package))
    assert describe(cycles) == "toy.a -> toy.b -> toy.a"


def test_a_cycle_through_a_package_init_is_reported(tmp_path: Path) -> None:
    """Importing toy.sub.w runs toy/sub/__init__.py, which imports toy.host: a cycle."""
    package = _write_package(tmp_path, {
        "toy/__init__.py": "",
        "toy/host.py": "from toy.sub.w import Watch\n",
        "toy/sub/__init__.py": "from .run import Run\n",
        "toy/sub/w.py": "class Watch: ...\n",
        "toy/sub/run.py": "from ..host import Host\nfrom . import w\n",
    })
    cycles = find_cycles(import_graph(package))
    assert describe(cycles) == "toy.host -> toy.sub -> toy.sub.run -> toy.host"


def test_type_checking_imports_and_parent_packages_are_not_cycles(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "toy/__init__.py": "from .a import A\n",
        "toy/a.py": """\
            from typing import TYPE_CHECKING
            from . import b
            if TYPE_CHECKING:
                from .c import C
            class A: ...
            """,
        "toy/b.py": "import toy.c\n",
        "toy/c.py": """\
            import typing
            if typing.TYPE_CHECKING:
                from toy.a import A
            else:
                from toy import d
            """,
        "toy/d.py": "",
    })
    graph = import_graph(package)
    assert graph["toy.a"] == {"toy.b"}
    assert graph["toy.b"] == {"toy.c"}
    assert graph["toy.c"] == {"toy.d"}
    assert find_cycles(graph) == []


@pytest.mark.parametrize("level, module, expected", [
    (1, None, "toy.sub"),
    (1, "w", "toy.sub.w"),
    (2, "host", "toy.host"),
])
def test_relative_imports_resolve_like_python(level: int, module: str | None,
                                              expected: str) -> None:
    node = ast.ImportFrom(module=module, names=[ast.alias(name="x")], level=level)
    assert _absolute_base("toy.sub.run", False, node) == expected
    assert _absolute_base("toy.sub", True, node) == expected
