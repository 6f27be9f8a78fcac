"""The demo's outputs: a text table, ``results.json``, the figure, the
per-run histories (CSV) and a Markdown report; and its progress bars. The
reproduction writes its JSON, PNGs, histories and progress bar with the
same helpers."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import layca_optax
from layca_optax._io import atomic_write, atomic_write_text


def short_name(path: str) -> str:
    """``"Conv_0/kernel"`` -> ``"Conv_0"``."""
    return path.removesuffix("/kernel")


def format_report(results: Mapping[str, Any]) -> str:
    """The summary table and each layer's final rotation, as text.

    Args:
      results: what :func:`~layca_optax.experiments.mnist1d.run_demo` returns.

    Returns:
      The two tables and the optimizers' definitions, ready to print.
    """
    runs = results["optimizers"]
    header = (
        f"{'optimizer':<11} {'train acc':>9} {'test acc':>8} "
        f"{'mean rot':>8} {'min rot':>7} {'wall s':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, run in runs.items():
        lines.append(
            f"{name:<11} {run['train_accuracy']:>9.2%} "
            f"{run['test_accuracy']:>8.2%} {run['rotation_mean']:>8.3f} "
            f"{run['rotation_min']:>7.3f} {run['seconds']:>6.1f}"
        )
    lines += ["", "final layer rotation (cosine distance to init):"]
    names = list(runs)
    width = max(8, *map(len, names))
    lines.append(f"{'layer':<10} " + " ".join(f"{n:>{width}}" for n in names))
    for layer in results["layers"]:
        values = (runs[n]["final_rotation"][layer] for n in names)
        row = " ".join(f"{v:>{width}.3f}" for v in values)
        lines.append(f"{short_name(layer):<10} {row}")
    lines += ["", "optimizers (each with the same step decay):"]
    lines += [f"  {n:<11} {run['optimizer']}" for n, run in runs.items()]
    return "\n".join(lines)


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """Writes ``results`` as indented JSON, atomically."""
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def history(run: Mapping[str, Any]) -> layca_optax.RotationHistory:
    """One run's per-epoch records as a :class:`layca_optax.RotationHistory`:
    ``rotation/<layer>``, ``train_loss`` and ``test_accuracy`` per epoch."""
    curves = {f"rotation/{k}": v for k, v in run["rotation_curves"].items()}
    curves["train_loss"] = run["train_loss"]
    curves["test_accuracy"] = run["test_accuracy_curve"]
    out = layca_optax.RotationHistory(unit="epoch")
    for epoch, values in enumerate(zip(*curves.values(), strict=True), 1):
        nan = float("nan")
        row = [nan if v is None else v for v in values]
        out.append(epoch, dict(zip(curves, row, strict=True)))
    return out


def figure(results: Mapping[str, Any]) -> Any:
    """The layer-rotation curves, one panel per optimizer.

    Each panel is :func:`layca_optax.plot_rotation_curves` (the paper's
    style: one line per layer coloured by depth with ``viridis``, first
    layer dark, a "First layer" / "Last layer" colour bar, the cosine
    distance to the initial weights from 0 to 1 against the epoch). Only
    matplotlib's object API is used (the Agg canvas), so pyplot's global
    state is left alone.

    Args:
      results: what :func:`~layca_optax.experiments.mnist1d.run_demo` returns.

    Returns:
      The matplotlib ``Figure``, three panels per row.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, layers = results["optimizers"], results["layers"]
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    size = (4.6 * cols, 3.3 * rows + 0.5)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
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


def write_png(path: Path, fig: Any, dpi: int) -> None:
    """Writes a matplotlib figure as a PNG, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def write_figure(path: Path, results: Mapping[str, Any]) -> Any:
    """Writes :func:`figure` as a PNG, atomically, and returns it."""
    fig = figure(results)
    write_png(path, fig, dpi=110)
    return fig


def write_markdown(path: Path, results: Mapping[str, Any], image: str) -> None:
    """Writes a Markdown report: the settings, the tables, the figure."""
    text = (
        f"# Layca demo: {results['task']}\n\n"
        f"{results['epochs']} epochs, step decay, seed {results['seed']}, "
        f"{results['n_train']} train / {results['n_test']} test samples, "
        f"layca_optax {results['layca_optax_version']}, "
        f"jax {results['jax_version']} ({results['backend']}).\n\n"
        f"```\n{format_report(results)}\n```\n\n"
        f"![Layer rotation curves]({image})\n"
    )
    atomic_write_text(path, text)


def _floats(values: Iterable[Any]) -> list[float | None]:
    """JSON-ready floats (6 significant digits); None where not finite."""
    out = [float(v) for v in values]
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in out]


def finite(value: float | None) -> float | None:
    """A JSON-ready float (6 significant digits); None if not finite."""
    return None if value is None else _floats([value])[0]


def summary(result: Any, **settings: Any) -> dict[str, Any]:
    """One optimizer's entry of ``results.json``.

    Args:
      result: its :class:`~layca_optax.experiments.TrainResult`.
      **settings: put first (the optimizer's description, learning rate).

    Returns:
      The settings, the final accuracies, the mean and minimum final layer
      rotation, each layer's final rotation and per-epoch curve, the train
      loss and test accuracy per epoch, and the wall times.
    """
    final = {k: v[-1] for k, v in result.rotation.items()}
    mean, low = _floats([np.mean(list(final.values())), min(final.values())])
    return {
        **settings,
        "train_accuracy": _floats([result.train_accuracy])[0],
        "test_accuracy": _floats([result.test_accuracy])[0],
        "rotation_mean": mean,
        "rotation_min": low,
        "final_rotation": dict(
            zip(final, _floats(final.values()), strict=True)
        ),
        "rotation_curves": {k: _floats(v) for k, v in result.rotation.items()},
        "train_loss": _floats(result.train_loss),
        "test_accuracy_curve": _floats(result.test_accuracy_curve),
        "seconds": round(result.seconds, 2),
        "compile_seconds": round(result.compile_seconds, 2),
    }


def progress_bar(
    total: int, unit: str, desc: str | None = None, *, verbose: bool = True
) -> Any:
    """A tqdm bar on stderr; disabled (``bar.disable``) when stderr is no
    terminal, or when not ``verbose``."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=None if verbose else True,  # None: off unless a terminal
        dynamic_ncols=True,
    )


class Progress:
    """One tqdm bar per run on a terminal, else one line per run (stderr).

    Args:
      label: what is trained, e.g. ``"[2/5] sgd"``.
      epochs: the run's epochs (the bar's total).
    """

    def __init__(self, label: str, epochs: int) -> None:
        self.label, self.epochs = label, epochs
        self.bar = progress_bar(epochs, "epoch", label)

    def __call__(self, done: int) -> None:
        """Moves the bar to ``done`` epochs (called from the run)."""
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self, run: Mapping[str, Any]) -> None:
        """Ends the bar (or prints the line) with the run's results."""
        if self.bar.disable:
            unit = "epoch" if self.epochs == 1 else "epochs"
            line = (
                f"{self.label}: {self.epochs} {unit}, train acc "
                f"{run['train_accuracy']:.2%}, test acc "
                f"{run['test_accuracy']:.2%}, {run['seconds']:.1f} s "
                f"({run['compile_seconds']:.1f} s compiling)"
            )
            print(line, file=sys.stderr, flush=True)
        else:
            text = f"test acc {run['test_accuracy']:.1%}"
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.close()
