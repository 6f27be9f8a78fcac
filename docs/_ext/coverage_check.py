"""Fails the Sphinx build if a public name is missing from the API reference.

Every name in ``layca_optax.__all__`` must be documented as
``layca_optax.<name>`` (by ``autofunction``, ``autoclass`` or ``autodata``
in ``api.md``). Checked once all pages are read, for every builder; a
missing name is logged as an error and sets a non-zero exit status, with or
without ``-W``.
"""

from __future__ import annotations

from typing import Any

from sphinx.util import logging


logger = logging.getLogger(__name__)


def missing_names(documented: set[str]) -> list[str]:
    """The public names not among the documented ``layca_optax.*`` objects."""
    import layca_optax

    return [
        name
        for name in layca_optax.__all__
        if f"layca_optax.{name}" not in documented
    ]


def _check(app: Any, env: Any) -> None:
    missing = missing_names(set(env.get_domain("py").objects))
    if missing:
        logger.error(
            "coverage_check: names in layca_optax.__all__ missing from the "
            "API reference (add them to docs/api.md): %s",
            ", ".join(missing),
        )
        app.statuscode = 1


def setup(app: Any) -> dict[str, Any]:
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
