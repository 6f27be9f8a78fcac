"""The language-model study's figures: validation loss against the step
(mean over seeds, the seeds' range shaded, the target marked; the whole
run and its second half), and each family's rotation curves per layer and
per stacked slice, drawn with matplotlib's object API (pyplot is left
alone) from a results block of
:func:`~layca_optax.experiments.lm.stats.summarize`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import layca_optax
from layca_optax.experiments.common.canvas import new_figure
from layca_optax.experiments.lm.stats import NAMES, array


LEGEND_MAX = 16
"""Rotation figures with at most this many curves per panel name them in
one legend below the panels; more keep only each panel's depth bar."""


def _hp(fam: Mapping[str, Any]) -> str:
    label = fam["label"]
    return label.split(", ", 1)[1] if ", " in label else ""


def _loss_figure(block: Mapping[str, Any]) -> Any:
    """Validation loss per family: the whole run, then its second half."""
    fig = new_figure(10.0, 4.4)
    axes = fig.subplots(1, 2)
    target = block["target"]
    for family, fam in block["families"].items():
        c = fam["curves"]
        steps, band = np.array(c["steps"]), c["val_loss"]
        label = f"{NAMES.get(family, family)} ({_hp(fam)})"
        for ax in axes:
            (line,) = ax.plot(steps, array(band["mean"]), label=label)
            ax.fill_between(
                steps,
                array(band["min"]),
                array(band["max"]),
                color=line.get_color(),
                alpha=0.2,
            )
    half = block["setup"]["steps"] / 2
    axes[1].set_xlim(half, block["setup"]["steps"])
    late = [
        v
        for fam in block["families"].values()
        for side in ("min", "max")
        for s, v in zip(
            fam["curves"]["steps"],
            fam["curves"]["val_loss"][side],
            strict=True,
        )
        if s >= half and v is not None
    ]
    if late and target is not None:
        low = min(target, *late) - 0.02
        axes[1].set_ylim(low, max(late) + 0.02)
    for ax, title in zip(
        axes, ("Whole run", "Second half (zoom)"), strict=True
    ):
        ax.set(xlabel="Step", ylabel="Validation loss (nats/char)", title=title)
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].text(
        0.98, 0.95, f"target {target:.4f} (AdamW's final)", ha="right",
        va="top", transform=axes[0].transAxes, fontsize=8, color="grey",
    )  # fmt: skip
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
    s = block["setup"]
    corpus = "King James Bible" if s["corpus"] == "kjv" else s["corpus"]
    fig.suptitle(
        f"{corpus}: validation loss, mean over {len(s['seeds'])} seeds "
        "(band: min-max)"
    )
    return fig


def _rotation_figure(block: Mapping[str, Any], key: str) -> Any:
    """One panel per family: each layer's (``key`` ``"rotation"``) or
    each stacked slice's (``"slices"``) rotation, mean over seeds."""
    families = block["families"]
    cols = min(3 if len(families) <= 6 else 4, len(families))
    rows = -(-len(families) // cols)
    order = block["setup"]["layers" if key == "rotation" else "slices"]
    legend = len(order) <= LEGEND_MAX
    extra = 0.25 * -(-len(order) // 4) if legend else 0.0
    fig = new_figure(4.0 * cols, 3.4 * rows + 0.4 + extra)
    grid = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax in grid[len(families) :]:
        ax.set_visible(False)
    axes = grid[: len(families)]
    for ax, (family, fam) in zip(axes, families.items(), strict=True):
        history = layca_optax.RotationHistory()
        c = fam["curves"]
        for j, step in enumerate(c["steps"]):
            history.append(
                step, {k: array([v[j]])[0] for k, v in c[key].items()}
            )
        layca_optax.plot_rotation_curves(
            history,
            prefix="",
            layer_order=order,
            ax=ax,
            title=f"{NAMES.get(family, family)}\n{_hp(fam)}",
            x_label="Step",
            legend=False,
        )
    if legend:  # the layers' names, once (each panel has a depth bar)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="outside lower center", ncols=4, fontsize=7
        )
    what = "layer (stacked leaf)" if key == "rotation" else "stacked slice"
    fig.suptitle(
        f"Rotation of each {what}: cosine distance to init, mean over seeds "
        "(colour: depth)"
    )
    return fig


def figures(block: Mapping[str, Any]) -> dict[str, Any]:
    """``{"loss", "rotation", "slices"}``: matplotlib figures."""
    return {
        "loss": _loss_figure(block),
        "rotation": _rotation_figure(block, "rotation"),
        "slices": _rotation_figure(block, "slices"),
    }
