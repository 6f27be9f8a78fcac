"""Heatmap of a re-initialization robustness study (layers x checkpoints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax.analysis._reinit_result import ReinitResult


@checks.public
def plot_reinit_robustness(
    result: ReinitResult,
    *,
    ax: Any = None,
    metric_name: str = "metric",
    cmap: str = "viridis",
    annotate: bool = True,
    digits: int = 2,
    rerandom: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Any:
    """Draws a :class:`ReinitResult` as a heatmap, as in Zhang et al.

    One row per layer, in ``result.paths`` order (top row first, so pass the
    layers input side first), one column per checkpoint (the
    initialization first), and, after a white gap, a ``rnd`` column with the
    mean re-randomized metric. The colour is the metric (a colour bar on the
    right, labelled ``metric_name``); cells show the value. The title gives
    the baseline. No ``pyplot`` state is used, so this works headless.

    Args:
      result: what :func:`reinit_robustness` returned.
      ax: a matplotlib ``Axes`` to draw into; default: a new ``Figure``.
      metric_name: the colour bar's label (``"test accuracy"``...).
      cmap: a matplotlib colour map name.
      annotate: write each cell's value in it.
      digits: decimals of the annotations.
      rerandom: add the ``rnd`` column (when there are draws).
      vmin: the colour scale's low end; default: the smallest value.
      vmax: the colour scale's high end; default: the largest value.
      title: default: ``"baseline <metric_name> = <value>"``.

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> import numpy as np
      >>> import layca_optax
      >>> r = layca_optax.ReinitResult(
      ...     paths=("Dense_0/kernel", "Dense_1/kernel"),
      ...     checkpoint_labels=("init", "10", "final"), baseline=0.97,
      ...     reinit=np.array([[0.2, 0.8, 0.97], [0.95, 0.96, 0.97]]),
      ...     rerandom=np.array([[0.1], [0.3]]))
      >>> fig = layca_optax.plot_reinit_robustness(r, metric_name="accuracy")
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['init', '10', 'final', 'rnd']

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022 (Figs. 1-2).
    """
    try:
        from matplotlib import colormaps
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "`plot_reinit_robustness` needs matplotlib: "
            "pip install matplotlib (or '.[plot]' in a clone)"
        ) from None
    data = np.asarray(result.reinit, np.float64)
    labels = list(result.checkpoint_labels)
    if rerandom and result.rerandom.size:
        data = np.hstack([data, np.mean(result.rerandom, axis=1)[:, None]])
        labels.append("rnd")
    num_layers, num_cols = data.shape
    own_figure = ax is None
    if ax is None:
        fig = Figure(figsize=(1.2 + 0.75 * num_cols, 1.0 + 0.5 * num_layers))
        ax = fig.add_subplot()
    fig = ax.figure
    norm = Normalize(
        np.nanmin(data) if vmin is None else vmin,
        np.nanmax(data) if vmax is None else vmax,
    )
    image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(num_cols), labels)
    ax.set_yticks(range(num_layers), list(result.paths))
    ax.set_xlabel("checkpoint the layer is reset to")
    ax.set_ylabel("layer (input first)")
    ax.tick_params(length=0)
    if num_cols > len(result.checkpoint_labels):
        ax.axvline(num_cols - 1.5, color="white", linewidth=4)
    if annotate:
        colors = colormaps[cmap](norm(data))
        luminance = colors[..., :3] @ np.array([0.299, 0.587, 0.114])
        for (i, j), v in np.ndenumerate(data):
            ax.text(
                j,
                i,
                f"{v:.{digits}f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if luminance[i, j] > 0.5 else "white",
            )
    fig.colorbar(image, ax=ax, label=metric_name)
    if title is None:
        title = f"baseline {metric_name} = {result.baseline:.{digits + 1}f}"
    ax.set_title(title)
    if own_figure:  # leave a caller's figure and its layout engine alone
        fig.tight_layout()
    return fig
