"""The options of ``layca-optax reproduce`` and ``report`` (imported
without JAX: the defaults are the reproduction's settings); they run in
:mod:`~layca_optax.experiments.reproduce.main`."""

from __future__ import annotations

from typing import Any

from layca_optax.experiments.common.argtypes import path, positive_float
from layca_optax.experiments.common.command import (
    Command,
    add_out,
    add_seeds_and_jobs,
)
from layca_optax.experiments.reproduce import settings


def add_reproduce(reproduce: Any) -> None:
    """The options of ``layca-optax reproduce``."""
    reproduce.add_argument(
        "--no-modular",
        action="store_true",
        help="skip the modular-arithmetic transformer study (about 6 "
        "minutes with --jobs 2 on 2 CPU cores)",
    )
    add_out(reproduce, "reproduce-out")
    _add_run_size(reproduce)
    reproduce.add_argument(
        "--task",
        choices=settings.TASKS,
        default=settings.DEFAULT.task,
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
    default, quick = settings.DEFAULT, settings.QUICK
    add_seeds_and_jobs(
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
        type=positive_float(settings.MAX_SCALE),
        default=settings.DEFAULT_SCALE,
        help=f"multiply the epochs (CNN {default.epochs}, MLP "
        f"{default.mlp_epochs}) by this, at most {settings.MAX_SCALE:g}, "
        "e.g. 2.5 for the paper's 100 CNN epochs on a GPU (default: "
        "%(default)g)",
    )


def add_report(report: Any) -> None:
    """The options of ``layca-optax report``."""
    report.add_argument(
        "--out",
        type=path,
        required=True,
        metavar="DIR",
        help="the folder of a reproduce run (holds results.json)",
    )


_REPRODUCE_NEEDS = ["flax", "mnist1d", "sklearn", "matplotlib", "tqdm"]
"""The extras ``reproduce`` needs."""


COMMANDS = [
    Command(
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
        add_arguments=add_reproduce,
        run="layca_optax.experiments.reproduce.main:reproduce",
        needs=lambda args: _REPRODUCE_NEEDS,
    ),
    Command(
        "report",
        help="redraw the figures and report.md of a reproduce run",
        description="Read DIR/results.json written by `layca-optax "
        "reproduce --out DIR` and write its figures and report.md again "
        "(e.g. after an upgrade of the report's code); nothing is trained.",
        add_arguments=add_report,
        run="layca_optax.experiments.reproduce.main:report",
        needs=lambda args: ["matplotlib"],
    ),
]
"""The study's commands."""
