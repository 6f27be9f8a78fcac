"""The result of a re-initialization robustness study: rows, verdicts and
its heatmap (layers x checkpoints)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax._matplotlib import matplotlib_parts
from layca_optax.analysis._reinit_checks import checked_fields


@dataclasses.dataclass(frozen=True, eq=False)
class ReinitResult:
    """What :func:`reinit_robustness` measured, one row per layer.

    Each field is checked when the result is made (``ValueError`` naming
    the field and the value): ``paths`` and ``checkpoint_labels`` distinct
    str (stored as tuples), ``reinit`` a ``[len(paths),
    len(checkpoint_labels)]`` and ``rerandom`` a ``[len(paths), draws]``
    array of real numbers (stored as float64), ``baseline`` a real number,
    ``tolerance`` a finite non-negative one, ``higher_is_better`` a bool.

    Attributes:
      paths: the probed layers' paths, in the order asked for.
      checkpoint_labels: one label per checkpoint, the initialization first.
      baseline: the metric of the unmodified ``params`` (a float).
      reinit: ``[layers, checkpoints]``: the metric with only that layer reset
        to its value at that checkpoint.
      rerandom: ``[layers, num_draws]``: the metric with only that layer
        replaced by a fresh draw from its initializer's distribution.
      tolerance: the largest metric drop for which a layer is robust.
      higher_is_better: True for accuracy-like metrics, False for losses.

    Example:
      >>> import numpy as np
      >>> import layca_optax
      >>> r = layca_optax.analysis.ReinitResult(
      ...     paths=("Dense_0/kernel", "Dense_1/kernel"),
      ...     checkpoint_labels=("init", "final"), baseline=0.97,
      ...     reinit=np.array([[0.20, 0.97], [0.968, 0.97]]),
      ...     rerandom=np.array([[0.10], [0.30]]))
      >>> r.drop()[:, 0].round(3).tolist()
      [0.77, 0.002]
      >>> r.classify()
      {'Dense_0/kernel': 'critical', 'Dense_1/kernel': 'robust'}
      >>> print(r.to_markdown(digits=2))
      | layer | init | final | rerandom | drop | verdict |
      | --- | --- | --- | --- | --- | --- |
      | Dense_0/kernel | 0.20 | 0.97 | 0.10 | 0.77 | critical |
      | Dense_1/kernel | 0.97 | 0.97 | 0.30 | 0.00 | robust |
      <BLANKLINE>
      baseline: 0.97
      <BLANKLINE>

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022, Sections 2-3.
    """

    paths: tuple[str, ...]
    checkpoint_labels: tuple[str, ...]
    baseline: float
    reinit: np.ndarray
    rerandom: np.ndarray
    tolerance: float = 0.01
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        """Checks the fields (``ValueError`` naming the field and the value)
        and stores them normalized: tuples of str, float64 arrays."""
        for name, value in checked_fields(self).items():
            object.__setattr__(self, name, value)

    def drop(self) -> np.ndarray:
        """``[layers, checkpoints]``: how much worse than ``baseline`` each is.

        Positive means worse: ``baseline - reinit`` when higher is better,
        ``reinit - baseline`` otherwise.

        Returns:
          A float64 array of the shape of ``reinit``.
        """
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (self.baseline - self.reinit)

    def classify(self) -> dict[str, str]:
        """``{path: "robust" | "critical"}`` from the reset to initialization.

        A layer is **robust** when resetting it to its value at the first
        checkpoint (the initialization) worsens the metric by at most
        ``tolerance`` (``drop()[:, 0] <= tolerance``), and **critical**
        otherwise. This is Zhang et al.'s re-initialization robustness
        (they call robust layers "ambient"); the default ``0.01`` is one
        percentage point of accuracy. Re-randomization is not used: in their
        experiments it hurts nearly every layer.

        Returns:
          A dict from each probed layer's path to its verdict, in ``paths``
          order.
        """
        drops = self.drop()[:, 0]
        return {
            p: "robust" if d <= self.tolerance else "critical"
            for p, d in zip(self.paths, drops, strict=True)
        }

    def to_table(self) -> list[dict[str, Any]]:
        """The result as rows, one dict per layer.

        Returns:
          A list of dicts with the keys ``layer``, one per checkpoint label,
          ``rerandom`` (mean over draws, NaN without draws), ``drop`` (at
          initialization) and ``verdict`` (from :meth:`classify`).
        """
        verdicts, drops = self.classify(), self.drop()[:, 0]
        rows = []
        for i, path in enumerate(self.paths):
            row: dict[str, Any] = {"layer": path}
            for label, v in zip(
                self.checkpoint_labels, self.reinit[i], strict=True
            ):
                row[label] = float(v)
            draws = self.rerandom[i]
            row["rerandom"] = float(np.mean(draws)) if draws.size else np.nan
            row["drop"] = float(drops[i])
            row["verdict"] = verdicts[path]
            rows.append(row)
        return rows

    def to_markdown(self, digits: int = 4) -> str:
        """:meth:`to_table` as a Markdown table, values to ``digits`` places.

        Args:
          digits: decimals of the floats.

        Returns:
          The table and a ``baseline:`` line, as a str.
        """
        rows = self.to_table()
        head = list(rows[0])
        fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(head) + " |"]
        lines.append("|" + " --- |" * len(head))
        lines += [
            "| " + " | ".join(fmt(r[k]) for k in head) + " |" for r in rows
        ]
        return "\n".join(lines) + f"\n\nbaseline: {fmt(self.baseline)}\n"


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
      >>> r = layca_optax.analysis.ReinitResult(
      ...     paths=("Dense_0/kernel", "Dense_1/kernel"),
      ...     checkpoint_labels=("init", "10", "final"), baseline=0.97,
      ...     reinit=np.array([[0.2, 0.8, 0.97], [0.95, 0.96, 0.97]]),
      ...     rerandom=np.array([[0.1], [0.3]]))
      >>> fig = layca_optax.analysis.plot_reinit_robustness(
      ...     r, metric_name="accuracy")
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['init', '10', 'final', 'rnd']

    References:
      Zhang, Bengio & Singer, `Are All Layers Created Equal?
      <https://arxiv.org/abs/1902.01996>`_, JMLR 2022 (Figs. 1-2).
    """
    colormaps, _, Normalize, Figure = matplotlib_parts()
    data, labels = _columns(result, rerandom)
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
        _annotate(ax, data, colormaps[cmap](norm(data)), digits)
    fig.colorbar(image, ax=ax, label=metric_name)
    if title is None:
        title = f"baseline {metric_name} = {result.baseline:.{digits + 1}f}"
    ax.set_title(title)
    if own_figure:  # leave a caller's figure and its layout engine alone
        fig.tight_layout()
    return fig


def _columns(result: ReinitResult, rerandom: bool) -> tuple[Any, list]:
    """The heatmap's values (a column per checkpoint, then the mean
    re-randomized metric with ``rerandom``) and the columns' labels."""
    data = np.asarray(result.reinit, np.float64)
    labels = list(result.checkpoint_labels)
    if rerandom and result.rerandom.size:
        data = np.hstack([data, np.mean(result.rerandom, axis=1)[:, None]])
        labels.append("rnd")
    return data, labels


def _annotate(ax: Any, data: Any, colors: Any, digits: int) -> None:
    """Writes each cell's value, black on light cells, white on dark."""
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
