"""The ``layca_path`` fixture (tests/conftest.py) reaches every `layca` its
tests build: no test module imports ``layca`` by name or builds one at
import (either would keep the fused step in the ``[chain]`` cases), and
no module doubles all its tests with it (only tests that build a layca)."""

import ast
from pathlib import Path

import pytest

import layca_optax


TESTS = Path(__file__).resolve().parents[1]
USERS = sorted(
    p for p in TESTS.rglob("test_*.py") if "layca_path" in p.read_text()
)


def _import_time_calls(tree):
    """The calls run at import: outside function bodies (their decorators
    and defaults included)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.decorator_list)
            stack.extend(node.args.defaults + node.args.kw_defaults)
        elif not isinstance(node, ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


@pytest.mark.parametrize(
    "path", USERS, ids=[p.relative_to(TESTS).as_posix() for p in USERS]
)
def test_layca_is_built_where_the_fixture_reaches_it(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "layca_optax":
            assert "layca" not in {a.name for a in node.names}, path
        if isinstance(node, ast.Assign):
            names = {getattr(t, "id", None) for t in node.targets}
            if "pytestmark" in names:
                assert "layca_path" not in ast.unparse(node.value), (
                    f"{path}: mark the tests that build a layca, not the module"
                )
    for call in _import_time_calls(tree):
        assert ast.unparse(call.func) != "layca_optax.layca", (
            f"{path}:{call.lineno}: a layca built at import"
        )


def test_the_users_are_found():
    assert TESTS / "core" / "test_layca.py" in USERS


@pytest.mark.usefixtures("layca_path")
def test_the_fixture_sets_the_path(request):
    fused = request.node.callspec.params["layca_path"] == "fused"
    assert layca_optax.layca.keywords == {"fused": fused}
