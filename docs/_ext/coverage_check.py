"""Fails the Sphinx build if a public name is missing from the API reference.

The public names are ``layca_optax.__all__`` and the ``__all__`` of the
public namespaces (:data:`NAMESPACES`: ``layca_optax.monitor``, ...). Each
must be documented in ``api.md`` (by ``autofunction``, ``autoclass`` or
``autodata``): as ``layca_optax.<name>`` when it is the top-level object,
as ``layca_optax.<namespace>.<name>`` otherwise; each namespace itself by
``automodule``. Checked once all pages are read, for every builder; a
missing name is logged as an error and sets a non-zero exit status, with or
without ``-W``.
"""

from __future__ import annotations

import importlib
from typing import Any

from sphinx.util import logging


logger = logging.getLogger(__name__)

NAMESPACES = ("monitor", "analysis", "sharding")
"""The public subpackages of ``layca_optax``, whose names are public too."""


def public_objects() -> list[str]:
    """The full names that the API reference must document, in order."""
    import layca_optax

    names = [f"layca_optax.{name}" for name in layca_optax.__all__]
    for namespace in NAMESPACES:
        module = importlib.import_module(f"layca_optax.{namespace}")
        names.append(module.__name__)
        for name in module.__all__:
            same = getattr(layca_optax, name, None) is getattr(module, name)
            full = (
                f"layca_optax.{name}" if same else f"{module.__name__}.{name}"
            )
            if full not in names:
                names.append(full)
    return names


def missing_names(documented: set[str]) -> list[str]:
    """The public objects not among the documented ``layca_optax.*`` ones."""
    return [name for name in public_objects() if name not in documented]


def _check(app: Any, env: Any) -> None:
    missing = missing_names(set(env.get_domain("py").objects))
    if missing:
        logger.error(
            "coverage_check: public names (layca_optax.__all__ and the "
            "namespaces' __all__) missing from the API reference (add them "
            "to docs/api.md): %s",
            ", ".join(missing),
        )
        app.statuscode = 1


def setup(app: Any) -> dict[str, Any]:
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
