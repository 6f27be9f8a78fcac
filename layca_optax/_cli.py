"""The ``layca-optax`` command line (also ``python -m layca_optax``)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path


DEMO_EPOCHS = 40
"""The demo's default epochs; ``layca_optax.examples.DEFAULT_EPOCHS`` too
(a test checks), kept here so that ``--help`` does not import JAX."""

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
        help="train a CNN on MNIST-1D with Layca and with SGD",
        description="Train a small 1-D CNN on MNIST-1D (generated locally) "
        "with layca_optax.layca(3**-3) and with plain SGD, print their "
        "accuracies and layer rotations (cosine distance of each layer to "
        "its initial weights), and optionally save results.json and the "
        "layer-rotation curves.",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEMO_EPOCHS,
        help="epochs of each run (default: %(default)s)",
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
        help="write results.json and layer_rotation.png into DIR",
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
    sgd_lr = mnist1d.SGD_LEARNING_RATE if args.sgd_lr is None else args.sgd_lr
    print(
        f"Layca vs SGD on MNIST-1D: 1-D CNN, {epochs} epochs, seed {args.seed}",
        flush=True,
    )
    results = mnist1d.run_demo(
        epochs, args.seed, args.out, sgd_learning_rate=sgd_lr, verbose=True
    )
    print()
    print(format_report(results))
    if args.out is not None:
        print(
            f"\nwrote {args.out / mnist1d.RESULTS_NAME} and "
            f"{args.out / mnist1d.FIGURE_NAME}"
        )
    return 0


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
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            parser.error(f"--out {args.out} exists and is not a directory")
        return _demo(args)
    raise AssertionError(f"unknown command {args.command!r}")  # unreachable
