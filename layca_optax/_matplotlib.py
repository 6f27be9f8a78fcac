"""matplotlib, imported when a figure is drawn (the optional ``plot``
extra): shared by the figures of ``monitor`` and ``analysis``."""

from __future__ import annotations

from typing import Any

from layca_optax import _checks as checks


def matplotlib_parts() -> tuple[Any, Any, Any, Any]:
    """matplotlib's ``colormaps``, ``ScalarMappable``, ``Normalize`` and
    ``Figure``, imported when a figure is drawn: matplotlib is the optional
    ``plot`` extra (``ImportError`` naming the function called without it).
    No ``pyplot`` state is used, so the figures work headless."""
    try:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            f"`{checks.caller()}` needs matplotlib: pip install matplotlib "
            "(or '.[plot]' in a clone)"
        ) from err
    return colormaps, ScalarMappable, Normalize, Figure
