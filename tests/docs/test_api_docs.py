"""The documentation: API coverage, and the guides' code cells run.

The API check parses ``docs/api.md`` (no Sphinx build): every name in
``layca_optax.__all__`` must have an ``autofunction``, ``autoclass`` or
``autodata`` entry there. The docs build checks the same thing on the built
inventory (``docs/_ext/coverage_check.py``).

The page check runs the code cells of every executed page (``file_format:
mystnb``) in order, in one namespace per page, as ``make docs`` does in a
Jupyter kernel, with warnings as errors (this suite's setting) and JAX's
default rank promotion (the pages broadcast biases as users do). The
docstrings' examples run with ``--doctest-modules``.
"""

import os
import pathlib
import re

import jax
import pytest

import layca_optax


DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
_AUTODOC = re.compile(
    r"^\.\. auto(?:function|class|data|exception|attribute)::\s+(\S+)\s*$",
    re.MULTILINE,
)
_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def _documented() -> list[str]:
    """Each autodoc entry's name, within its ``currentmodule``: a bare
    name for the top level, ``analysis.name`` / ``sharding.name`` for a
    namespace's own."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    names, module = [], "layca_optax"
    for line in text.splitlines():
        current = re.match(r"\.\. currentmodule:: ([\w.]+)", line)
        if current:
            module = current.group(1)
        for name in _AUTODOC.findall(line):
            full = f"{module}.{name.removeprefix(module + '.')}"
            names.append(full.removeprefix("layca_optax."))
    return names


def _public() -> set[str]:
    """The top level's names and the namespaces' own (``analysis.name``)."""
    from layca_optax import analysis, sharding

    own = {
        f"{ns.__name__.removeprefix('layca_optax.')}.{n}"
        for ns in (analysis, sharding)
        for n in ns.__all__
        if n not in layca_optax.__all__
    }
    return set(layca_optax.__all__) | own


def test_every_public_name_is_in_the_api_reference():
    documented = set(_documented())
    missing = sorted(n for n in _public() if n not in documented)
    assert not missing, f"public names missing from docs/api.md: {missing}"


def test_the_api_reference_documents_only_public_names_once():
    documented = _documented()
    unknown = sorted(set(documented) - _public())
    twice = sorted({n for n in documented if documented.count(n) > 1})
    assert not unknown, f"docs/api.md documents non-public names: {unknown}"
    assert not twice, f"docs/api.md documents names twice: {twice}"


_NAMESPACE = re.compile(
    r"^### `layca_optax\.(\w+)`\n(.*?)(?=^##|\Z)", re.S | re.M
)


def test_the_api_reference_lists_each_namespace_and_its_names():
    """Each public namespace has a section (``automodule``) that lists
    exactly its ``__all__``; docs/_ext/coverage_check.py checks the same
    in the build."""
    from layca_optax import analysis, monitor, sharding

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    sections = dict(_NAMESPACE.findall(text))
    for namespace in (monitor, analysis, sharding):
        name = namespace.__name__
        body = sections.get(name.removeprefix("layca_optax."), "")
        assert f".. automodule:: {name}" in body, f"no section for {name}"
        listed = re.findall(
            r"\{obj\}`~layca_optax\.(?:analysis\.|sharding\.)?(\w+)`", body
        )
        assert sorted(listed) == sorted(namespace.__all__), name


def _executed_pages() -> list[pathlib.Path]:
    pages = sorted(DOCS.glob("**/*.md"))
    return [
        p
        for p in pages
        if "_build" not in p.parts
        and "file_format: mystnb" in p.read_text(encoding="utf-8")[:200]
    ]


def _cells(page: pathlib.Path) -> list[str]:
    """The page's code cells, without the hidden (``remove-cell``) ones,
    which only set up the notebook's display (``%matplotlib inline``)."""
    cells = []
    for cell in _CELL.findall(page.read_text(encoding="utf-8")):
        lines = cell.splitlines()
        options = []
        while lines and lines[0].startswith(":"):  # cell options (tags)
            options.append(lines.pop(0))
        if not any("remove-cell" in option for option in options):
            cells.append("\n".join(lines))
    return cells


def test_the_guides_are_executed_pages():
    names = {p.relative_to(DOCS).as_posix() for p in _executed_pages()}
    for page in ["getting_started.md", "algorithm.md", "howto/adam.md"]:
        assert page in names


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LAYCA_DOCS_PAGES"),
    reason="`make docs` executes the pages; LAYCA_DOCS_PAGES=1 runs them here",
)
@pytest.mark.parametrize(
    "page",
    _executed_pages(),
    ids=lambda p: p.relative_to(DOCS).as_posix(),
)
def test_docs_page_code_cells_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages may write files
    cells = _cells(page)
    assert cells, f"{page} has no code cells"
    namespace: dict = {"__name__": "__docs__"}
    with jax.numpy_rank_promotion("allow"):
        for i, source in enumerate(cells):
            code = compile(source, f"{page.name}[cell {i}]", "exec")
            exec(code, namespace)


def test_public_namespaces_reexport_top_level_names():
    """``layca_optax.monitor`` and ``.tracing`` (like ``optax.tree``) hold
    top-level objects; ``.analysis`` (paper replication) and ``.sharding``'s
    recipes are not at the top level (issue 25: the top level is the
    optimizer, its primitives and the monitoring every user needs)."""
    from layca_optax import analysis, monitor, sharding, tracing

    for namespace in (monitor, tracing):
        for name in namespace.__all__:
            assert getattr(namespace, name) is getattr(layca_optax, name), name
    for name in analysis.__all__:
        assert name not in layca_optax.__all__, name
    assert {"param_shardings", "state_shardings"} <= set(sharding.__all__)
    assert not {"param_shardings", "state_shardings"} & set(layca_optax.__all__)
    with pytest.raises(AttributeError):
        layca_optax.adapt_copy  # noqa: B018
