"""The reproduction's figures, drawn from ``results.json`` alone.

Only matplotlib's object API (the Agg canvas) is used, so pyplot's global
state is left alone. Rotation-curve panels show the first seed's run; their
titles give the mean and standard deviation of the test accuracy over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import layca_optax
from layca_optax.experiments.common import runs
from layca_optax.experiments.common.canvas import new_figure
from layca_optax.experiments.common.format import number
from layca_optax.experiments.reproduce.stats import (
    adaptive_methods,
    pick,
    stats,
)


FIGURES = {
    "fig1": "fig1_layca_grid.png",
    "fig2": "fig2_sgd.png",
    "fig3": "fig3_sgd_weight_decay.png",
    "fig6": "fig6_adaptive.png",
    "fig8": "fig8_mlp_features.png",
    "reinit": "reinit_robustness.png",
    "rotation_reinit": "rotation_reinit.png",
}
"""Each figure's file name in ``--out``."""


def _figure(rows: int, cols: int, width: float, height: float) -> Any:
    fig = new_figure(width * cols, height * rows + 0.6)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _title(config: Mapping[str, Any]) -> str:
    s = stats(config)
    return (
        f"{config['label']}\ntest {number(s['test_mean'], '.1f', scale=100)}"
        f" +- {number(s['test_std'], '.1f', scale=100)}%"
    )


def _curves(ax: Any, config: Mapping[str, Any], layers: Sequence[str]) -> None:
    history = runs.history(config["runs"][0])
    layca_optax.plot_rotation_curves(
        history,
        layers=list(layers),
        ax=ax,
        title=_title(config),
        ylim=(0, 1),  # the paper's range, the same for every panel
        legend=False,
    )
    ax.title.set_fontsize(8)


def curves_figure(
    configs: Sequence[Mapping[str, Any]],
    layers: Sequence[str],
    title: str,
    cols: int | None = None,
) -> Any:
    """Layer-rotation curves, one panel per configuration, in order."""
    cols = cols or min(len(configs), 6)
    rows = math.ceil(len(configs) / cols)
    fig, axes = _figure(rows, cols, 2.9, 2.4)
    for ax in axes.ravel()[len(configs) :]:
        ax.remove()
    for ax, config in zip(axes.ravel(), configs, strict=False):
        _curves(ax, config, layers)
    fig.suptitle(title)
    return fig


def fig1(configs: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> Any:
    """Fig. 1: the Layca grid, one row per alpha, one column per rho(0)."""
    alphas = sorted({c["hparams"]["alpha"] for c in configs})
    rhos = sorted({c["hparams"]["learning_rate"] for c in configs})[::-1]
    fig, axes = _figure(len(alphas), len(rhos), 2.9, 2.4)
    for config in configs:
        hp = config["hparams"]
        ax = axes[alphas.index(hp["alpha"]), rhos.index(hp["learning_rate"])]
        _curves(ax, config, layers)
    fig.suptitle(
        "Fig. 1: Layca, alpha (rows) x initial learning rate rho(0) "
        "(columns): layer rotation and test accuracy"
    )
    return fig


def fig6(configs: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> Any:
    """Fig. 6: each adaptive method at its best rate, without (top row) and
    with Layca (bottom row)."""
    methods = adaptive_methods(configs)
    fig, axes = _figure(2, len(methods), 2.9, 2.4)
    for j, method in enumerate(methods):
        for i, kind in enumerate((method, f"{method}-layca")):
            group = [c for c in configs if c["kind"] == kind]
            best = pick([{**stats(c), "i": k} for k, c in enumerate(group)])
            _curves(axes[i, j], group[best["i"]], layers)
    fig.suptitle(
        "Fig. 6: adaptive methods at their learning rate picked on "
        "validation,\nwithout (top) and with Layca (bottom)"
    )
    return fig


def _mosaic(images: np.ndarray, cols: int = 4) -> np.ndarray:
    """Tiles ``images`` (n, h, w), each scaled to [0, 1], with 1-px gaps."""
    n, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k, image in enumerate(images):
        lo, hi = image.min(), image.max()
        scaled = (image - lo) / (hi - lo) if hi > lo else image * 0 + 0.5
        r, c = divmod(k, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (
            scaled
        )
    return out


def fig8(configs: Sequence[Mapping[str, Any]], layers: Sequence[str]) -> Any:
    """Fig. 8: the MLP's first-layer features (16 hidden units' input
    weights as images, first seed) at each learning rate."""
    fig, axes = _figure(1, len(configs), 2.6, 2.9)
    first = layers[0]
    for ax, config in zip(axes[0], configs, strict=True):
        run = config["runs"][0]
        ax.imshow(_mosaic(np.asarray(run["features"])), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        rotation = run["final_rotation"][first]
        ax.set_title(
            f"{_title(config)}\nfirst-layer rotation {number(rotation)}",
            fontsize=8,
        )
    fig.suptitle("Fig. 8: MLP first-layer features after Layca training")
    return fig


def mean_reinit(entries: Sequence[Mapping[str, Any]]) -> Any:
    """The seeds' reinit studies averaged into one ``ReinitResult``."""
    first = entries[0]
    return layca_optax.analysis.ReinitResult(
        paths=tuple(runs.short_name(p) for p in first["paths"]),
        checkpoint_labels=tuple(first["checkpoint_labels"]),
        baseline=float(np.mean([e["baseline"] for e in entries])),
        reinit=np.mean([e["reinit"] for e in entries], axis=0),
        rerandom=np.mean([e["rerandom"] for e in entries], axis=0),
    )


def reinit(studies: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    """Zhang et al.'s heatmaps, one per trained model (mean over seeds)."""
    fig, axes = _figure(1, len(studies), 5.2, 3.6)
    for ax, (name, entries) in zip(axes[0], studies.items(), strict=True):
        result = mean_reinit(entries)
        layca_optax.analysis.plot_reinit_robustness(
            result,
            ax=ax,
            metric_name="test accuracy",
            vmin=0.0,
            vmax=1.0,
            title=f"{name}: baseline {result.baseline:.3f}",
        )
    fig.suptitle("Re-initialization robustness (mean over seeds)")
    return fig


def rotation_reinit(
    found: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
) -> Any:
    """Final rotation against re-initialization drop, one point per layer
    and run, one color per optimizer (its configuration picked on
    validation)."""
    fig, axes = _figure(1, 1, 6.0, 4.2)
    ax = axes[0, 0]
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6"]
    for color, (name, pairs) in zip(colors, found.items(), strict=False):
        x = [v for rotations, _ in pairs for v in rotations]
        y = [v for _, drops in pairs for v in drops]
        ax.scatter(x, y, s=18, alpha=0.75, color=color, label=name)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("final rotation (cosine distance to init)")
    ax.set_ylabel("drop when reset to init (validation, points)")
    if found:
        ax.legend(fontsize=8)
    fig.suptitle(
        "Layer rotation vs re-initialization drop\nevery layer and seed of "
        "each optimizer's configuration picked on validation",
        fontsize=10,
    )
    return fig
