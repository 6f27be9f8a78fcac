"""The import graph of ``layca_optax``, read from the source (nothing is
imported): the app's modules form no cycle, import no private module of
another package, no private name of another module, and each study's
modules depend one way (``report -> figures -> stats -> train ->
settings``).

Run as a script, it prints the counts for a source tree::

    python tests/experiments/test_import_graph.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


ROOT = Path(__file__).resolve().parents[2]
APP = "layca_optax.experiments"

LAYERS = (
    "settings",
    "command",
    "experiments",
    "optimizers",
    "tasks",
    "train",
    "rank_tests",
    "stats",
    "robustness",
    "figures",
    "report",
    "results_check",
    "run",
    "main",
)
"""A study's modules, each importing only those listed before it (its own
study's; ``command`` and ``settings`` import no JAX)."""

STUDIES = ("demo", "reproduce", "modular", "lm")

ALLOWED_PRIVATE = {
    (f"{APP}.common.interrupt", "layca_optax._early_signals"),
}
"""The one private module the app imports: the command's signal handlers,
installed by ``layca_optax/__init__.py`` before anything else is imported
(so it sits at the package's root); the app's own handlers must know
them."""


class Import(NamedTuple):
    """One import of a ``layca_optax`` module by another."""

    source: str
    target: str
    names: tuple[str, ...]  # the names taken from ``target`` (from-imports)
    in_function: bool
    type_checking: bool


def modules(root: Path) -> dict[str, Path]:
    """Every module of ``layca_optax`` under ``root``, by dotted name."""
    found = {}
    for path in sorted((root / "layca_optax").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _package(name: str, path: Path) -> str:
    """The package a module belongs to (a package: itself)."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _walk(
    node: ast.AST, in_function: bool = False, guarded: bool = False
) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every import statement, inside a function or not, under ``if
    TYPE_CHECKING:`` or not."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, guarded
            continue
        inner = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        test = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(
            child.test
        )
        yield from _walk(child, inner, guarded or test)


def imports(root: Path = ROOT) -> list[Import]:
    """Every import of a ``layca_optax`` module by one under ``root``."""
    known = modules(root)
    found = []
    for name, path in known.items():
        package = _package(name, path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, in_function, guarded in _walk(tree):
            if isinstance(node, ast.Import):
                targets = [(a.name, ()) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join([*up, *([base] if base else [])])
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:
                        targets.append((sub, ()))
                    else:
                        targets.append((base, (alias.name,)))
            for target, names in targets:
                if target in known and target != name:
                    found.append(
                        Import(name, target, names, in_function, guarded)
                    )
    return found


def cycles(edges: list[Import]) -> list[list[str]]:
    """The import cycles (strongly connected components of two or more
    modules; imports under ``TYPE_CHECKING`` left out)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_checking:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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

    # Deep import chains recurse; the limit is restored after, as other
    # tests rely on the default (a 5,000-deep JSON must raise
    # RecursionError in tests/io/test_hostile_files.py).
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _private_part(target: str) -> str | None:
    """The package holding ``target``'s first private part (None: all
    public)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return None


def private_imports(edges: list[Import], root: Path = ROOT) -> list[Import]:
    """Imports of a private module of another package (``_io`` of
    ``layca_optax`` from ``layca_optax.experiments``, ``data._dataset``
    from ``reproduce``)."""
    known = modules(root)
    out = []
    for e in edges:
        holder = _private_part(e.target)
        if holder is not None and holder != _package(e.source, known[e.source]):
            out.append(e)
    return out


def private_names(edges: list[Import]) -> list[Import]:
    """Imports of a private name (``_array``) from another module."""
    private = lambda n: n.startswith("_") and not n.endswith("__")
    return [e for e in edges if any(map(private, e.names))]


def _layer(module: str) -> tuple[str, int] | None:
    """``(study, rank in LAYERS)`` of a study's module (None: not one)."""
    parts = module.split(".")
    if module.startswith(f"{APP}.") and len(parts) == 4 and parts[2] in STUDIES:
        if parts[3] in LAYERS:
            return parts[2], LAYERS.index(parts[3])
    return None


def upward_imports(edges: list[Import]) -> list[Import]:
    """Imports within a study against :data:`LAYERS`' order."""
    out = []
    for e in edges:
        a, b = _layer(e.source), _layer(e.target)
        if a and b and a[0] == b[0] and b[1] >= a[1]:
            out.append(e)
    return out


def _pairs(edges: list[Import]) -> int:
    """How many ``(importer, imported)`` pairs ``edges`` hold."""
    return len({(e.source, e.target) for e in edges})


def functions_imports(root: Path = ROOT) -> int:
    """Import statements inside the app's functions (of any module)."""
    found = 0
    for name, path in modules(root).items():
        if name.startswith(APP):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += sum(inner for _, inner, _ in _walk(tree))
    return found


def counts(root: Path = ROOT) -> dict[str, int]:
    """The app's import cycles, private imports across packages, private
    names across modules, upward imports and imports in functions; the
    library's (outside the app) cycles and private imports across
    packages."""
    edges = imports(root)
    app = [e for e in edges if e.source.startswith(APP)]
    lib = [e for e in edges if not e.source.startswith(APP)]
    app_cycles = [c for c in cycles(edges) if any(m.startswith(APP) for m in c)]
    return {
        "app modules": sum(m.startswith(APP) for m in modules(root)),
        "app cycles": len(app_cycles),
        "app modules in cycles": sum(map(len, app_cycles)),
        "app private imports across packages": _pairs(
            private_imports(app, root)
        ),
        "app private names across modules": _pairs(private_names(app)),
        "app upward imports in a study": _pairs(upward_imports(app)),
        "app import statements inside functions": functions_imports(root),
        "library cycles": len(cycles(lib)),
        "library private imports across packages": _pairs(
            private_imports(lib, root)
        ),
    }


def test_the_app_has_no_import_cycle():
    edges = imports()
    found = [c for c in cycles(edges) if any(m.startswith(APP) for m in c)]
    assert found == []


def test_the_app_imports_no_private_module_of_another_package():
    app = [e for e in imports() if e.source.startswith(APP)]
    found = [
        (e.source, e.target)
        for e in private_imports(app)
        if (e.source, e.target) not in ALLOWED_PRIVATE
    ]
    assert found == []


def test_the_app_imports_no_private_name_of_another_module():
    app = [e for e in imports() if e.source.startswith(APP)]
    assert [(e.source, e.target, e.names) for e in private_names(app)] == []


def test_each_study_depends_one_way():
    app = [e for e in imports() if e.source.startswith(APP)]
    assert [(e.source, e.target) for e in upward_imports(app)] == []


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for key, value in counts(where).items():
        print(f"{key}: {value}")
