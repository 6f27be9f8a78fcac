"""The ``layca-optax demo`` command's options (imported without JAX: the
defaults are the demo's settings); it runs in
:mod:`~layca_optax.experiments.demo.main`."""

from __future__ import annotations

import argparse
from typing import Any

from layca_optax.experiments.common import limits
from layca_optax.experiments.common.argtypes import (
    int_range,
    path,
    positive_float,
)
from layca_optax.experiments.common.command import Command
from layca_optax.experiments.demo import settings


def add_arguments(demo: Any) -> None:
    """The options of ``layca-optax demo``."""
    optimizers = settings.OPTIMIZERS
    demo.add_argument(
        "--epochs",
        type=int_range(1, settings.MAX_EPOCHS),
        default=None,
        help=f"epochs of each run, at most {settings.MAX_EPOCHS} (default: "
        f"{settings.DEFAULT_EPOCHS}, or {settings.QUICK_EPOCHS} with --quick)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {settings.QUICK_EPOCHS} epochs unless --epochs",
    )
    demo.add_argument(
        "--optimizers",
        nargs="+",
        choices=optimizers,
        default=list(optimizers),
        metavar="NAME",
        help="the optimizers to train, in this order, from "
        f"{', '.join(optimizers)} (default: all)",
    )
    demo.add_argument(
        "--seed",
        type=int_range(0, limits.MAX_SEED),
        default=settings.DEFAULT_SEED,
        help="seed of the initialization and shuffling, from 0 to "
        f"{limits.MAX_SEED} (default: %(default)s)",
    )
    demo.add_argument(
        "--out",
        type=path,
        default=None,
        metavar="DIR",
        help="write results.json, layer_rotation.png, report.md and "
        "history_<optimizer>.csv into DIR (created if its parent exists)",
    )
    demo.add_argument(
        "--sgd-lr",
        type=positive_float(),
        default=settings.SGD_LEARNING_RATE,
        metavar="LR",
        help="initial learning rate of plain SGD (default: %(default)g, the "
        "tuned one)",
    )


def needs(args: argparse.Namespace) -> list[str]:
    """The extras the demo needs (matplotlib for the figure of ``--out``)."""
    return ["flax", "mnist1d"] + (["matplotlib"] if args.out else [])


COMMANDS = [
    Command(
        "demo",
        help="train a CNN on MNIST-1D with Layca, SGD and Adam",
        description="Train a small 1-D CNN on MNIST-1D (generated locally) "
        "with the same epochs and step-decay schedule and five optimizers: "
        "layca_optax.layca(3**-3), plain SGD, SGD + weight decay, Adam and "
        "Adam + Layca (each tuned on this task); print their accuracies and "
        "layer rotations (cosine distance of each layer to its initial "
        "weights), and optionally save results.json, the layer-rotation "
        "curves (one panel per optimizer), per-run CSV histories and a "
        "Markdown report.",
        add_arguments=add_arguments,
        run="layca_optax.experiments.demo.main:demo",
        needs=needs,
    )
]
"""The study's commands."""
