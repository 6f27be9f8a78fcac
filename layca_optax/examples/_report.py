"""The demo's outputs: a text table, ``results.json`` and the figure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layca_optax._io import atomic_write, atomic_write_text


def short_name(path: str) -> str:
    """``"Conv_0/kernel"`` -> ``"Conv_0"``."""
    return path.removesuffix("/kernel")


def format_report(results: Mapping[str, Any]) -> str:
    """The summary table and each layer's final rotation, as text.

    Args:
      results: what :func:`~layca_optax.examples.mnist1d.run_demo` returns.

    Returns:
      The two tables, one line per row, ready to print.
    """
    runs = results["optimizers"]
    header = (
        f"{'optimizer':<10} {'lr':>7} {'train acc':>9} {'test acc':>8} "
        f"{'mean rot':>8} {'min rot':>7} {'wall s':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, run in runs.items():
        lines.append(
            f"{name:<10} {run['learning_rate']:>7.4f} "
            f"{run['train_accuracy']:>9.2%} {run['test_accuracy']:>8.2%} "
            f"{run['rotation_mean']:>8.3f} {run['rotation_min']:>7.3f} "
            f"{run['seconds']:>6.1f}"
        )
    lines += ["", "final layer rotation (cosine distance to init):"]
    names = list(runs)
    lines.append(f"{'layer':<10} " + " ".join(f"{n:>8}" for n in names))
    for layer in results["layers"]:
        values = (runs[n]["final_rotation"][layer] for n in names)
        row = " ".join(f"{v:>8.3f}" for v in values)
        lines.append(f"{short_name(layer):<10} {row}")
    return "\n".join(lines)


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """Writes ``results`` as indented JSON, atomically."""
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def write_figure(path: Path, results: Mapping[str, Any]) -> None:
    """Plots the layer-rotation curves, one panel per optimizer, as a PNG.

    As the paper's figures: one line per layer, coloured by depth with
    ``viridis`` (first layer dark, last layer yellow), cosine distance to
    the initial weights against the epoch, y from 0 to 1. Matplotlib is
    imported here, and only its object API with the Agg canvas is used, so
    the global pyplot backend is left alone.

    Args:
      path: the PNG to write (atomically).
      results: what :func:`~layca_optax.examples.mnist1d.run_demo` returns.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    runs, layers = results["optimizers"], results["layers"]
    cmap = matplotlib.colormaps["viridis"]
    depth = [i / max(1, len(layers) - 1) for i in range(len(layers))]
    fig = Figure(figsize=(4.2 * len(runs) + 1.2, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        curves = run["rotation_curves"]
        epochs = list(range(len(curves[layers[0]]) + 1))
        for layer, d in zip(layers, depth, strict=True):
            ax.plot(epochs, [0.0, *curves[layer]], color=cmap(d), lw=1.5)
        ax.set_title(f"{name} (test acc {run['test_accuracy']:.1%})")
        ax.set_xlim(0, epochs[-1])
        ax.set_ylim(0, 1)
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Cosine distance to init")
    colors = ScalarMappable(norm=Normalize(0, 1), cmap=cmap)
    bar = fig.colorbar(colors, ax=list(axes), ticks=[0, 1], aspect=30)
    bar.ax.set_yticklabels(["First layer", "Last layer"])
    fig.suptitle("Layer rotation curves, MNIST-1D CNN")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
