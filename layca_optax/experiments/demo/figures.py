"""The demo's figure: the layer-rotation curves, one panel per optimizer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import layca_optax
from layca_optax.experiments.common.canvas import new_figure
from layca_optax.experiments.common.files import write_png
from layca_optax.experiments.common.runs import history


def figure(results: Mapping[str, Any]) -> Any:
    """The layer-rotation curves, one panel per optimizer.

    Each panel is :func:`layca_optax.plot_rotation_curves` (the paper's
    style: one line per layer coloured by depth with ``viridis``, first
    layer dark, a "First layer" / "Last layer" colour bar, the cosine
    distance to the initial weights from 0 to 1 against the epoch). Only
    matplotlib's object API is used (the Agg canvas), so pyplot's global
    state is left alone.

    Args:
      results: what :func:`~layca_optax.experiments.demo.run.run_demo` returns.

    Returns:
      The matplotlib ``Figure``, three panels per row.
    """
    runs, layers = results["optimizers"], results["layers"]
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig = new_figure(4.6 * cols, 3.3 * rows + 0.5)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax in axes[len(runs) :]:
        ax.remove()
    for ax, (name, run) in zip(axes, runs.items(), strict=False):
        title = f"{name}: test acc {run['test_accuracy']:.1%}"
        layca_optax.plot_rotation_curves(
            history(run), layers=layers, ax=ax, title=title, ylim=(0, 1)
        )
    fig.suptitle(
        f"Layer rotation curves, MNIST-1D CNN, {results['epochs']} epochs"
    )
    return fig


def write_figure(path: Path, results: Mapping[str, Any]) -> Any:
    """Writes :func:`figure` as a PNG, atomically, and returns it."""
    fig = figure(results)
    write_png(path, fig, dpi=110)
    return fig
