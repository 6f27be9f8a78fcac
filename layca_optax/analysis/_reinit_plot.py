"""Kept only for ``layca_optax/__init__.py``'s import of
:func:`plot_reinit_robustness`, which now lives in ``_reinit_result.py``
with the result it draws. Delete this module once that import reads
``from layca_optax.analysis import ...``."""

from layca_optax.analysis._reinit_result import (  # noqa: F401
    plot_reinit_robustness,
)
