"""Gives ``autodata`` the docstrings of ``layca_optax``'s type aliases.

A type alias such as ``Axis = None | int | ...`` is a ``types.UnionType``
whose ``__doc__`` is Python's ("Represent a PEP 604 union type"), and its
own docstring (the string literal after the assignment) lives in the
private module that defines it (``layca_optax/_axes.py``, or one of a
public namespace: ``layca_optax/analysis/_reinit.py``), not in
``layca_optax/__init__.py``, where autodoc looks. This reads those literals
from the private modules' source.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

from coverage_check import NAMESPACES
from sphinx.pycode import ModuleAnalyzer


def private_modules() -> Iterator[str]:
    """``layca_optax._*`` and ``layca_optax.<namespace>._*``, by name."""
    for package in ["layca_optax", *(f"layca_optax.{n}" for n in NAMESPACES)]:
        path = importlib.import_module(package).__path__
        for info in pkgutil.iter_modules(path):
            if info.name.startswith("_"):
                yield f"{package}.{info.name}"


def alias_docstrings() -> dict[str, list[str]]:
    """``{name: docstring lines}`` of module-level names in ``layca_optax``."""
    import layca_optax

    docs: dict[str, list[str]] = {}
    for module in private_modules():
        analyzer = ModuleAnalyzer.for_module(module)
        for (scope, name), lines in analyzer.find_attr_docs().items():
            if scope == "" and name in layca_optax.__all__:
                docs[name] = list(lines)
    return docs


def setup(app: Any) -> dict[str, Any]:
    docs = alias_docstrings()

    def process(app, what, name, obj, options, lines):
        del app, obj, options
        short = name.removeprefix("layca_optax.")
        if what == "data" and short in docs:
            lines[:] = docs[short]

    app.connect("autodoc-process-docstring", process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
