"""The options of ``layca-optax modular`` (imported without JAX: the
defaults are the study's settings); it runs in
:mod:`~layca_optax.experiments.modular.main`."""

from __future__ import annotations

from typing import Any

from layca_optax.experiments.common.argtypes import int_range
from layca_optax.experiments.common.command import (
    Command,
    add_out,
    add_seeds_and_jobs,
)
from layca_optax.experiments.modular import settings


def add_arguments(sub: Any) -> None:
    """The options of ``layca-optax modular``."""
    default, quick = settings.DEFAULT, settings.QUICK
    add_out(sub, "modular-out")
    sub.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: p={quick.p}, {quick.steps} steps, one rate per "
        "family",
    )
    sub.add_argument(
        "--steps",
        type=int_range(1, settings.MAX_STEPS),
        default=None,
        metavar="N",
        help=f"steps of every run, a multiple of the evaluation interval "
        f"(default: {default.steps}, every {default.eval_every}; with "
        f"--quick {quick.steps}, every {quick.eval_every})",
    )
    add_seeds_and_jobs(sub, len(default.seeds), len(quick.seeds), 0)


def _description() -> str:
    """The command's ``--help`` text (from the default settings)."""
    default = settings.DEFAULT
    return (
        f"Train a small transformer on a + b mod {default.p} "
        f"(generated; {default.train_fraction:g} of the table for training "
        "and validation, the rest for testing) with AdamW (weight decay "
        "tuned), Adam + Layca, SGD + Layca and Hyperball (AdamH), the same "
        "step budget each, every configuration picked on validation; write "
        "modular.json, modular.md and the figures (test accuracy, layer "
        "rotation curves) with the verdicts (mean, sd, Welch t over seeds)."
    )


COMMANDS = [
    Command(
        "modular",
        help="modular arithmetic with a transformer: rotation control "
        "against tuned weight decay",
        description=_description(),
        add_arguments=add_arguments,
        run="layca_optax.experiments.modular.main:modular",
        needs=lambda args: ["flax", "matplotlib"],
    )
]
"""The study's commands."""
