"""The modular-arithmetic study's figures: the accuracy curves (train and
test, mean over seeds, the seeds' range shaded) and the per-layer rotation
curves of each family's picked configuration, drawn with matplotlib's object
API (pyplot is left alone) from a results block of
:func:`~layca_optax.experiments.modular.stats.summarize`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import layca_optax
from layca_optax.experiments.common.canvas import new_figure
from layca_optax.experiments.modular.stats import NAMES, array, hparams_text


def _figure(cols: int, width: float, height: float) -> tuple[Any, Any]:
    fig = new_figure(width * cols, height)
    return fig, fig.subplots(1, cols, squeeze=False, sharey=True)[0]


def _accuracy_figure(block: Mapping[str, Any]) -> Any:
    """Train and test accuracy against the step, mean over seeds (test:
    the seeds' range shaded), the best configuration of each family."""
    fig, (ax_train, ax_test) = _figure(2, 5.0, 3.6)
    for family, fam in block["families"].items():
        c = fam["curves"]
        label = f"{NAMES.get(family, family)} ({hparams_text(fam['best'])})"
        (line,) = ax_test.plot(c["steps"], array(c["test"]), label=label)
        seeds = np.array([array(s) for s in c["test_per_seed"]])
        ax_test.fill_between(
            c["steps"],
            seeds.min(axis=0),
            seeds.max(axis=0),
            color=line.get_color(),
            alpha=0.15,
        )
        ax_train.plot(c["steps"], array(c["train"]), color=line.get_color())
    for ax, what in ((ax_train, "Train"), (ax_test, "Test")):
        ax.set(xlabel="Step", title=f"{what} accuracy", ylim=(0, 1.02))
        ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax_train.set_ylabel("Accuracy (mean over seeds)")
    ax_test.legend(fontsize=7, loc="lower right")
    s = block["setup"]
    fig.suptitle(
        f"a + b mod {s['p']}: {s['n_train']} train pairs, {s['n_test']} test"
    )
    return fig


def _rotation_figure(block: Mapping[str, Any]) -> Any:
    """One panel per family: each layer's rotation (mean over seeds)."""
    families = block["families"]
    fig, axes = _figure(len(families), 3.6, 3.8)
    layers = block["setup"]["layers"]
    for ax, (family, fam) in zip(axes, families.items(), strict=True):
        history = layca_optax.RotationHistory()
        c = fam["curves"]
        for j, step in enumerate(c["steps"]):
            row = {k: array([v[j]])[0] for k, v in c["rotation"].items()}
            history.append(step, row)
        layca_optax.plot_rotation_curves(
            history,
            prefix="",
            layers=layers,
            ax=ax,
            title=f"{NAMES.get(family, family)}\n{hparams_text(fam['best'])}",
            x_label="Step",
            ylim=(0, 1.2),
            legend=False,
        )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=7)
    fig.suptitle("Layer rotation (cosine distance to init), mean over seeds")
    return fig


def figures(block: Mapping[str, Any]) -> dict[str, Any]:
    """``{"accuracy": Figure, "rotation": Figure}``: the accuracy curves
    and the rotation curves per layer of each family's picked
    configuration (matplotlib's object API; pyplot is left alone)."""
    return {
        "accuracy": _accuracy_figure(block),
        "rotation": _rotation_figure(block),
    }
