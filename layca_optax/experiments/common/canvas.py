"""Figures drawn with matplotlib's object API on the Agg canvas, so that
pyplot's global state is left alone."""

from __future__ import annotations

from typing import Any


def new_figure(width: float, height: float) -> Any:
    """An empty matplotlib ``Figure`` of ``width`` x ``height`` inches,
    laid out by the constrained engine, on an Agg canvas.

    matplotlib is imported here, when a figure is drawn: it is an extra
    that the commands need only then (``demo`` without ``--out``, the
    parser for ``--help``: never).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig
