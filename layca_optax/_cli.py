"""The ``layca-optax`` command line (also ``python -m layca_optax``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path


DEMO_EPOCHS = 40
"""The demo's default epochs; ``layca_optax.examples.DEFAULT_EPOCHS`` too
(a test checks), kept here so that ``--help`` does not import JAX."""

DEMO_QUICK_EPOCHS = 3
"""``demo --quick``'s epochs (``layca_optax.examples.mnist1d.QUICK_EPOCHS``)."""

DEMO_OPTIMIZERS = ("layca", "sgd", "sgd-wd", "adam", "adam-layca")
"""The demo's optimizers (``layca_optax.examples.OPTIMIZERS``)."""

_EXTRA_HINT = (
    "The demo needs the examples extra: pip install 'layca-optax[examples]'"
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``layca-optax``."""
    parser = argparse.ArgumentParser(
        prog="layca-optax",
        description="Layca (layer-level controlled amount of weight "
        "rotation) for Optax: demo and tools.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True
    )
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
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"epochs of each run (default: {DEMO_EPOCHS}, or "
        f"{DEMO_QUICK_EPOCHS} with --quick)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {DEMO_QUICK_EPOCHS} epochs unless --epochs",
    )
    demo.add_argument(
        "--optimizers",
        nargs="+",
        choices=DEMO_OPTIMIZERS,
        default=list(DEMO_OPTIMIZERS),
        metavar="NAME",
        help="the optimizers to train, in this order, from "
        f"{', '.join(DEMO_OPTIMIZERS)} (default: all)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initialization and shuffling (default: %(default)s)",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write results.json, layer_rotation.png, report.md and "
        "history_<optimizer>.csv into DIR (created if its parent exists)",
    )
    demo.add_argument(
        "--sgd-lr",
        type=_positive_float,
        default=None,
        metavar="LR",
        help="initial learning rate of plain SGD (default: the tuned one)",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    needed = ["flax", "mnist1d"] + (["matplotlib"] if args.out else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"layca-optax demo: missing {', '.join(missing)}. {_EXTRA_HINT}",
            file=sys.stderr,
        )
        return 1
    from layca_optax.examples import mnist1d
    from layca_optax.examples._report import format_report

    epochs = args.epochs
    if epochs is None:
        epochs = DEMO_QUICK_EPOCHS if args.quick else DEMO_EPOCHS
    names = list(dict.fromkeys(args.optimizers))  # without repeats
    sgd_lr = mnist1d.SGD_LEARNING_RATE if args.sgd_lr is None else args.sgd_lr
    print(
        f"{', '.join(names)} on MNIST-1D: 1-D CNN, {epochs} epochs, "
        f"seed {args.seed}",
        flush=True,
    )
    results = mnist1d.run_demo(
        epochs,
        args.seed,
        args.out,
        names=names,
        sgd_learning_rate=sgd_lr,
        verbose=True,
    )
    print()
    print(format_report(results))
    if args.out is not None:
        written = [mnist1d.RESULTS_NAME, mnist1d.FIGURE_NAME]
        written += [mnist1d.REPORT_NAME, "history_*.csv"]
        print(f"\nwrote {', '.join(written)} in {args.out}")
    return 0


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exits with a one-line error (status 2) unless ``out`` can be written,
    before any training."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} exists and is not a directory")
    folder = out if out.exists() else out.absolute().parent
    if not folder.is_dir():
        parser.error(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: {folder} is not writable")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``layca-optax``.

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.out is not None:
            _check_out(parser, args.out)
        return _demo(args)
    raise AssertionError(f"unknown command {args.command!r}")  # unreachable
