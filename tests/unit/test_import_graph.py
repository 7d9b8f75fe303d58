"""The package's modules import each other without a cycle, function-level imports included.

Every ``import`` and ``from ... import`` statement of every module under ``src/camlens`` counts, wherever it
stands (module level, inside a function or a method, under ``try``), because a function-level import is a
dependency that merely runs later. The imports under ``if TYPE_CHECKING:`` do not count: they never run, and
they are how a module names another's types without depending on it.

An edge ``a -> b`` joins module ``a`` to the module ``b`` it names: ``from camlens.x import y`` points at
``camlens.x.y`` when that is a module and at ``camlens.x`` otherwise; relative imports are resolved against
``a``'s package. A package's ``__init__`` is the module of the package's name. The edge from a module to its
own ancestor packages is not counted: Python has initialised them before the module itself runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import camlens

SRC = Path(camlens.__file__).resolve().parent
ROOT = SRC.parent

# Edges known to close a cycle, each with the reason it is still there. Empty is the goal.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def import_graph(exceptions: bool = True) -> dict[str, set[str]]:
    """``module -> the camlens modules it imports`` for every module of the package (without the
    :data:`KNOWN_EXCEPTIONS` edges, unless ``exceptions`` is False)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = _package_of(name, path).split(".")
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    targets.append(child if child in modules else base)
            for target in targets:
                while target and target not in modules:  # import a.b.c where only a.b is ours: a.b
                    target = target.rpartition(".")[0]
                if not target or target == name or name.startswith(target + "."):
                    continue  # not ours, itself, or an ancestor package (initialised before the module runs)
                if not exceptions or (name, target) not in KNOWN_EXCEPTIONS:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_the_module_graph_is_acyclic():
    graph = import_graph()
    for source, target in KNOWN_EXCEPTIONS:  # an exception that no longer closes a cycle is stale
        assert target in import_graph(exceptions=False)[source], f"stale exception: {source} no longer imports {target}"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_function_level_imports_and_skips_type_checking_ones():
    """The parser is not vacuous: it finds a function-level import, a cycle when there is one,
    and leaves out what stands under ``if TYPE_CHECKING:``."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from camlens.engine import Capture\n"
        "def f():\n    from camlens.explanation import explain\n"
    )
    names = [node.module for node in _imports(tree) if isinstance(node, ast.ImportFrom)]
    assert names == ["typing", "camlens.explanation"]
    graph = import_graph()
    assert "camlens.engine" in graph["camlens.explanation"]  # explain imports the engine at module level
    assert "camlens.layouts" in graph["camlens.engine"]
    assert len(graph) == len(_modules()) > 50
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_in_the_library_imports_the_command_line():
    """The command line is a front end over the library: no module outside ``camlens.cli`` imports it. A
    ``__main__`` module is a program (``python -m camlens.serve``), never imported, so it may start it."""
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets if t == "camlens.cli" or t.startswith("camlens.cli."))
        for name, targets in graph.items()
        if not (name == "camlens.cli" or name.startswith("camlens.cli.") or name.endswith(".__main__"))
    }
    assert {name: t for name, t in offenders.items() if t} == {}


def test_no_public_name_of_the_package_is_also_one_of_its_modules():
    """``camlens.explain`` is the function and stays it: importing a submodule binds it on the package, so a module
    named like a public name would replace it (the reason the engine and the explanation modules have names of
    their own)."""
    submodules = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    assert {"engine", "explanation", "layers"} <= submodules
    assert set(camlens.__all__) & submodules == set()
