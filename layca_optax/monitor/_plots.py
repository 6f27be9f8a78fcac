"""Layer-rotation figures in the paper's style (needs matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax._masks import KeyPathLike
from layca_optax._matplotlib import matplotlib_parts
from layca_optax.monitor import _plot_order as po
from layca_optax.monitor._history import RotationHistory


_LEGEND_MAX = 8  # curves; more get no legend unless legend=True
NARROW = 3.5
"""Axes narrower than this (inches, as laid out before drawing) get the
compact colour bar: two ticks, "First layer" / "Last layer", no label."""


def _narrow(fig: Any, ax: Any) -> bool:
    """Whether ``ax`` is a narrow panel (e.g. one of a row of subplots)."""
    return bool(ax.get_position().width * fig.get_figwidth() < NARROW)


def _colorbar(
    fig: Any, ax: Any, cmap: Any, names: list[str] | None, by_name: bool
) -> None:
    """The depth colour bar: "First layer" / "Last layer" next to a legend
    (``names`` None) or in a narrow panel; else the depth index (or name
    order) with the first and last names at its ends, as the curves are
    coloured."""
    _, ScalarMappable, Normalize, _ = matplotlib_parts()
    last = 1 if names is None else max(len(names) - 1, 1)
    colors = ScalarMappable(norm=Normalize(0, last), cmap=cmap)
    narrow = _narrow(fig, ax)
    if names is None or narrow:
        bar = fig.colorbar(colors, ax=ax, ticks=[0, last], aspect=30)
        word = "name" if by_name else "layer"
        small = {"fontsize": "small"} if narrow else {}
        bar.ax.set_yticklabels([f"First {word}", f"Last {word}"], **small)
        if by_name and not narrow:
            bar.set_label("Name order (pass layer_order= for depth)")
        return
    inner = np.unique(np.round(np.linspace(0, len(names) - 1, 5)[1:-1]))
    ticks = [0, *(int(i) for i in inner if 0 < i < len(names) - 1)]
    ticks += [len(names) - 1] if len(names) > 1 else []
    bar = fig.colorbar(colors, ax=ax, ticks=ticks, aspect=30)
    labels = [str(i) for i in ticks]  # the ends: the layers' names
    labels[0], labels[-1] = names[0], names[-1]
    bar.ax.set_yticklabels(labels, fontsize="small")
    if by_name:
        bar.set_label("Name order (pass layer_order= for depth)")
    else:
        bar.set_label("Depth index (0: the first layer)")


def _plot(
    history: Any,
    prefix: str,
    layers: Sequence[KeyPathLike] | None,
    options: dict[str, Any],
    labels: tuple[str | None, str],
    curves: bool,
) -> Any:
    """Draws the curves; ``options`` holds ``layer_order``, ``ax``,
    ``title``, ``ylim`` and ``legend``, ``labels`` the axes' labels."""
    order = options["layer_order"]
    names = po.layer_names(history, prefix, layers, order)
    po.check_ylim(options["ylim"])
    po.check_legend(options["legend"])
    x_label = po.x_label(history, labels[0])
    by_name = layers is None and order is None
    colormaps, _, _, Figure = matplotlib_parts()
    cmap = colormaps["viridis"]
    ax = options["ax"]
    if ax is None:
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    x = history.steps.astype(np.float64)
    start = curves and x[0] > 0  # the paper's curves start at (0, 0)
    positive = False
    for name, depth in zip(names, np.linspace(0, 1, len(names)), strict=True):
        y = history.as_array(prefix + name)
        positive |= bool(np.any(y > 0))
        xs, ys = (np.r_[0.0, x], np.r_[0.0, y]) if start else (x, y)
        ax.plot(xs, ys, color=cmap(depth), lw=1.5, label=name)
    legend = options["legend"]
    legend = legend if legend is not None else len(names) <= _LEGEND_MAX
    _colorbar(fig, ax, cmap, names if not legend else None, by_name)
    po.y_axis(ax, options["ylim"], curves, positive)
    if legend:
        title = "Layer (name order)" if by_name else "Layer"
        ax.legend(title=title, fontsize="small", title_fontsize="small")
    ax.margins(x=0)
    ax.set_xlabel(x_label)
    ax.set_ylabel(labels[1])
    ax.grid(alpha=0.3)
    if options["title"] is not None:
        ax.set_title(options["title"])
    return fig


@checks.public
def plot_rotation_curves(
    history: RotationHistory,
    *,
    prefix: str = "rotation/",
    layers: Sequence[KeyPathLike] | None = None,
    layer_order: Sequence[KeyPathLike] | None = None,
    ax: Any = None,
    title: str | None = None,
    x_label: str | None = None,
    ylim: tuple[float, float] | None = None,
    legend: bool | None = None,
) -> Any:
    """Plots the layer rotation curves: cosine distance to init over time.

    The paper's figures: one line per layer, coloured with ``viridis`` by
    depth (the first layer dark purple, the last yellow; layer ``l`` of
    ``L`` at ``linspace(0, 1, L)[l]``), a colour bar labelled "First layer"
    / "Last layer", the recorded steps or epochs on x (labelled with the
    history's :attr:`~RotationHistory.unit`: "Epoch" for
    ``RotationHistory(unit="epoch")``, else "Step") and the cosine
    distance on y. As in the paper, each curve starts at (0, 0), the
    initialization, when the first record is after step 0.

    **Many layers.** Above 8 curves (or with ``legend=False``) there is no
    legend: the colour bar runs over the depth index 0 to ``L - 1``
    instead, its ends labelled with the first and last layers' names.
    In a narrow panel (axes under 3.5 inches wide, e.g. one of a row of
    subplots) the bar stays compact whatever the count: two ticks, "First
    layer" / "Last layer", no label, so that the curves keep the panel.

    **Order.** The colours follow ``layer_order`` (a forward order, input
    side first, e.g. :func:`forward_order`'s result) or the order of
    ``layers``. With neither, the depth is unknown: the curves follow the
    names in natural order (``dense2`` before ``dense10``, ``kernel/2``
    before ``kernel/10``), and the figure says so (colour bar "First name"
    / "Last name", legend title "Layer (name order)") rather than warn.
    Per-slice names (``"h/mlp/kernel/3"``, from ``axis=...``) take the
    place of their leaf (``"h/mlp/kernel"``) in ``layer_order`` and
    ``layers``, slices in index order; ``layer_order`` may also list the
    per-slice names themselves (the history's keys), in any order. The
    curves are drawn (and coloured) in that order. ``layer_order`` must
    list every drawn layer, and only layers of the history: a drawn layer
    it leaves out, or a name the history lacks, raises ``ValueError``
    naming them.

    **Range.** By default y spans 0 to 1 as in the paper (values up to 2
    are cut), unless every value lies below 0.5: then 0 to 1.1 times the
    largest, so that small curves (AdamW's 0.005 to 0.06) are visible. On
    axes sharing y (``sharey=True``) the rule reads the curves of all of
    them. Pass ``ylim=(0, 1)`` for the paper's range whatever the data.

    Args:
      history: the records, e.g. of :func:`rotation_metrics` per epoch.
      prefix: the keys' prefix; ``"track/cosine/"`` for
        :func:`tracked_metrics`.
      layers: the curves to draw (names after ``prefix``, or a leaf's path
        for all its slices), in forward order unless ``layer_order`` is
        given; default all.
      layer_order: the layers' forward order (paths or per-slice names),
        which orders the curves and colours; it must list every drawn
        layer (or its leaf), and no layer the history lacks.
      ax: a matplotlib ``Axes`` to draw in; default a new figure.
      title: the axes' title.
      x_label: the x-axis label; default from ``history.unit``.
      ylim: ``(bottom, top)`` of the y-axis; default the rule above.
      legend: draw a legend (entries in curve order); default when there
        are at most 8 curves (else the depth colour bar above).

    Returns:
      The matplotlib ``Figure``; a new one is not registered with pyplot,
      so save it with ``fig.savefig(path)`` (or pass ``ax=plt.gca()``).

    Raises:
      ValueError: a bad ``history``, ``prefix``, ``layers``, ``layer_order``,
        ``x_label``, ``ylim`` or ``legend``, named in the message.

    Example:
      >>> import layca_optax
      >>> history = layca_optax.RotationHistory(unit="epoch")
      >>> for epoch in range(1, 4):
      ...     history.append(epoch, {"rotation/dense10": 0.01 * epoch,
      ...                            "rotation/dense2": 0.02 * epoch})
      >>> fig = layca_optax.plot_rotation_curves(history)
      >>> [line.get_label() for line in fig.axes[0].get_lines()]
      ['dense2', 'dense10']
      >>> fig.axes[0].get_xlabel()
      'Epoch'

      >>> [round(float(v), 3) for v in fig.axes[0].get_ylim()]  # fitted
      [0.0, 0.066]
      >>> fig = layca_optax.plot_rotation_curves(
      ...     history, layer_order=["dense10", "dense2"], ylim=(0, 1))
      >>> [line.get_label() for line in fig.axes[0].get_lines()]
      ['dense10', 'dense2']
      >>> layca_optax.plot_rotation_curves(  # doctest: +ELLIPSIS
      ...     history, layer_order=["dense2"])
      Traceback (most recent call last):
      ...
      ValueError: `plot_rotation_curves(layer_order=...)` must list every ...

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Figure 1.
    """
    options = {
        "layer_order": layer_order,
        "ax": ax,
        "title": title,
        "ylim": ylim,
        "legend": legend,
    }
    labels = (x_label, "Cosine distance")
    args = (history, prefix, layers, options, labels)
    return _plot(*args, curves=True)


@checks.public
def plot_rotation_rates(
    history: RotationHistory,
    *,
    prefix: str = "track/rate/",
    layers: Sequence[KeyPathLike] | None = None,
    layer_order: Sequence[KeyPathLike] | None = None,
    ax: Any = None,
    title: str | None = None,
    x_label: str | None = None,
    ylim: tuple[float, float] | None = None,
    legend: bool | None = None,
) -> Any:
    r"""Plots each layer's per-step rotation rate, :math:`\tan\theta`.

    As :func:`plot_rotation_curves` (viridis by depth, a first/last layer
    colour bar, a depth colour bar instead of a legend above 8 curves, the
    same ``layers``/``layer_order`` rules and natural name order without
    them), with a log y scale (zero rates are left out;
    linear if no rate is positive), autoscaled unless ``ylim`` is given.

    Args:
      history: the records, e.g. of :func:`tracked_metrics` per step.
      prefix: the keys' prefix.
      layers: the curves to draw (names after ``prefix``, or a leaf's path
        for all its slices); default all.
      layer_order: the layers' forward order (paths or per-slice names),
        e.g. from :func:`forward_order`.
      ax: a matplotlib ``Axes`` to draw in; default a new figure.
      title: the axes' title.
      x_label: the x-axis label; default from ``history.unit`` ("Step"
        unless it is ``"epoch"``).
      ylim: ``(bottom, top)`` of the y-axis (bottom positive on the log
        scale); default matplotlib's autoscaling.
      legend: draw a legend; default when there are at most 8 curves.

    Returns:
      The matplotlib ``Figure``.

    Raises:
      ValueError: as :func:`plot_rotation_curves`.

    Example:
      >>> import layca_optax
      >>> history = layca_optax.RotationHistory()
      >>> history.append(1, {"track/rate/a": 1e-3, "track/rate/b": 1e-2})
      >>> history.append(2, {"track/rate/a": 2e-3, "track/rate/b": 1e-2})
      >>> fig = layca_optax.plot_rotation_rates(history)
      >>> fig.axes[0].get_yscale()
      'log'

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """
    options = {
        "layer_order": layer_order,
        "ax": ax,
        "title": title,
        "ylim": ylim,
        "legend": legend,
    }
    labels = (x_label, r"Rotation rate $\tan\theta$")
    args = (history, prefix, layers, options, labels)
    return _plot(*args, curves=False)
