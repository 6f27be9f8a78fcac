"""The ``layca-optax`` argument parser. It is built without importing JAX,
Optax or Flax (``--help`` and ``--version`` stay fast): the options'
defaults are read from the experiments' settings modules,
:mod:`~layca_optax.experiments.mnist1d` and
:mod:`~layca_optax.experiments._settings`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from layca_optax.experiments import _settings, mnist1d, modular
from layca_optax.experiments._argtypes import (
    Parser,
    int_range,
    path,
    positive_float,
    version,
)


PROG = "layca-optax"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``layca-optax``."""
    parser = Parser(
        prog=PROG,
        description="Layca (layer-level controlled amount of weight "
        "rotation) for Optax: demo and tools.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {version()}"
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True
    )
    _add_demo(commands)
    _add_reproduce(commands)
    _add_report(commands)
    _add_modular(commands)
    return parser


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
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
    )
    optimizers = mnist1d.OPTIMIZERS
    demo.add_argument(
        "--epochs",
        type=int_range(1, mnist1d.MAX_EPOCHS),
        default=None,
        help=f"epochs of each run, at most {mnist1d.MAX_EPOCHS} (default: "
        f"{mnist1d.DEFAULT_EPOCHS}, or {mnist1d.QUICK_EPOCHS} with --quick)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {mnist1d.QUICK_EPOCHS} epochs unless --epochs",
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
        type=int_range(0, _settings.MAX_SEED),
        default=mnist1d.DEFAULT_SEED,
        help="seed of the initialization and shuffling, from 0 to "
        f"{_settings.MAX_SEED} (default: %(default)s)",
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
        default=mnist1d.SGD_LEARNING_RATE,
        metavar="LR",
        help="initial learning rate of plain SGD (default: %(default)g, the "
        "tuned one)",
    )


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="redraw the figures and report.md of a reproduce run",
        description="Read DIR/results.json written by `layca-optax "
        "reproduce --out DIR` and write its figures and report.md again "
        "(e.g. after an upgrade of the report's code); nothing is trained.",
    )
    report.add_argument(
        "--out",
        type=path,
        required=True,
        metavar="DIR",
        help="the folder of a reproduce run (holds results.json)",
    )


def _add_reproduce(commands: Any) -> None:
    reproduce = commands.add_parser(
        "reproduce",
        help="check the paper's findings with several seeds",
        description="Multi-seed versions of the Layca paper's experiments "
        "on data available offline: Fig. 1 (Layca over alpha x rho(0)), "
        "Fig. 2 (SGD over learning rates), Fig. 3 (SGD + weight decay), "
        "Fig. 6 (Adam, RMSprop, Adagrad with and without Layca), Section 6 "
        "/ Fig. 8 (an MLP's first-layer features) and the "
        "re-initialization robustness study of Zhang et al. on the trained "
        "CNN and MLP, and the modular-arithmetic transformer study "
        "(`layca-optax modular`). Writes results.json, one CSV history per "
        "run, the figures and report.md (the verdict on each claim, mean "
        "and spread over seeds) into --out. Best rates are picked on a "
        "validation split. The default scale (177 runs, then the modular "
        "study) took 18 minutes with --jobs 2 on 2 idle CPU cores.",
    )
    reproduce.add_argument(
        "--no-modular",
        action="store_true",
        help="skip the modular-arithmetic transformer study (about 6 "
        "minutes with --jobs 2 on 2 CPU cores)",
    )
    reproduce.add_argument(
        "--out",
        type=path,
        default=Path("reproduce-out"),
        metavar="DIR",
        help="the output folder (created if its parent exists; default: "
        "%(default)s)",
    )
    _add_run_size(reproduce)
    reproduce.add_argument(
        "--task",
        choices=_settings.TASKS,
        default=_settings.DEFAULT.task,
        help="the CNN experiments' data and model: mnist1d (generated, "
        "1-D CNN), or the paper's cifar10 (C10-CNN1) and cifar100 "
        "(ResNet-32) from --data-dir (default: %(default)s)",
    )
    reproduce.add_argument(
        "--data-dir",
        type=path,
        default=None,
        metavar="DIR",
        help="folder with the CIFAR python batches (--task cifar10/100) "
        "and/or the MNIST IDX files (then the MLP trains on MNIST); "
        "default $LAYCA_DATA_DIR. Nothing is downloaded.",
    )


def _add_run_size(reproduce: Any) -> None:
    """``reproduce``'s options of how much is trained, and how."""
    default, quick = _settings.DEFAULT, _settings.QUICK
    _add_seeds_and_jobs(
        reproduce, len(default.seeds), len(quick.seeds), default.seeds[0]
    )
    reproduce.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: reduced grids, {quick.epochs} CNN and "
        f"{quick.mlp_epochs} MLP epochs",
    )
    reproduce.add_argument(
        "--scale",
        type=positive_float(_settings.MAX_SCALE),
        default=_settings.DEFAULT_SCALE,
        help=f"multiply the epochs (CNN {default.epochs}, MLP "
        f"{default.mlp_epochs}) by this, at most {_settings.MAX_SCALE:g}, "
        "e.g. 2.5 for the paper's 100 CNN epochs on a GPU (default: "
        "%(default)g)",
    )


def _add_modular(commands: Any) -> None:
    default, quick = modular.DEFAULT, modular.QUICK
    sub = commands.add_parser(
        "modular",
        help="modular arithmetic with a transformer: rotation control "
        "against tuned weight decay",
        description=f"Train a small transformer on a + b mod {default.p} "
        f"(generated; {default.train_fraction:g} of the table for training "
        "and validation, the rest for testing) with AdamW (weight decay "
        "tuned), Adam + Layca, SGD + Layca and Hyperball (AdamH), the same "
        "step budget each, every configuration picked on validation; write "
        "modular.json, modular.md and the figures (test accuracy, layer "
        "rotation curves) with the verdicts (mean, sd, Welch t over seeds).",
    )
    sub.add_argument(
        "--out",
        type=path,
        default=Path("modular-out"),
        metavar="DIR",
        help="the output folder (created if its parent exists; default: "
        "%(default)s)",
    )
    sub.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: p={quick.p}, {quick.steps} steps, one rate per "
        "family",
    )
    sub.add_argument(
        "--steps",
        type=int_range(1, modular.MAX_STEPS),
        default=None,
        metavar="N",
        help=f"steps of every run, a multiple of the evaluation interval "
        f"(default: {default.steps}, every {default.eval_every}; with "
        f"--quick {quick.steps}, every {quick.eval_every})",
    )
    _add_seeds_and_jobs(sub, len(default.seeds), len(quick.seeds), 0)


def _add_seeds_and_jobs(sub: Any, seeds: int, quick: int, first: int) -> None:
    """The ``--seeds``, ``--seed`` and ``--jobs`` options of a command that
    trains several seeds (``seeds`` by default, ``quick`` with --quick)."""
    sub.add_argument(
        "--seeds",
        type=int_range(1, _settings.MAX_SEEDS),
        default=None,
        metavar="N",
        help=f"seeds per configuration, at most {_settings.MAX_SEEDS} "
        f"(default: {seeds}, or {quick} with --quick)",
    )
    sub.add_argument(
        "--seed",
        type=int_range(0, _settings.MAX_SEED),
        default=first,
        help="the first seed; runs use SEED .. SEED+N-1, at most "
        f"{_settings.MAX_SEED} (default: %(default)s)",
    )
    sub.add_argument(
        "--jobs",
        type=int_range(1, _settings.max_jobs()),
        default=_settings.default_jobs(),
        metavar="N",
        help="worker processes; results do not depend on it (default: "
        f"%(default)s, the CPUs up to {_settings.MAX_JOBS}; at most "
        f"{_settings.max_jobs()} here)",
    )
