"""The ``layca-optax`` command line (also ``python -m layca_optax``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layca_optax.experiments import _settings, mnist1d
from layca_optax.experiments._interrupt import run_interruptible


PROG = "layca-optax"

_EXTRA_HINT = (
    "It needs the examples extra: pip install '.[examples]' in a clone of "
    "the repository"
)


def _version() -> str:
    """The installed distribution's version (``layca_optax.__version__``
    when it is not installed, e.g. run from a source tree)."""
    try:
        return importlib.metadata.version("layca-optax")
    except importlib.metadata.PackageNotFoundError:
        from layca_optax import __version__

        return __version__


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
        prog=PROG,
        description="Layca (layer-level controlled amount of weight "
        "rotation) for Optax: demo and tools.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {_version()}"
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
    optimizers = mnist1d.OPTIMIZERS
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"epochs of each run (default: {mnist1d.DEFAULT_EPOCHS}, or "
        f"{mnist1d.QUICK_EPOCHS} with --quick)",
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
        type=int,
        default=mnist1d.DEFAULT_SEED,
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
        default=mnist1d.SGD_LEARNING_RATE,
        metavar="LR",
        help="initial learning rate of plain SGD (default: %(default)g, the "
        "tuned one)",
    )
    _add_reproduce(commands)
    report = commands.add_parser(
        "report",
        help="redraw the figures and report.md of a reproduce run",
        description="Read DIR/results.json written by `layca-optax "
        "reproduce --out DIR` and write its figures and report.md again "
        "(e.g. after an upgrade of the report's code); nothing is trained.",
    )
    report.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="the folder of a reproduce run (holds results.json)",
    )
    return parser


def _add_reproduce(commands: Any) -> None:
    default, quick = _settings.DEFAULT, _settings.QUICK
    reproduce = commands.add_parser(
        "reproduce",
        help="check the paper's findings with several seeds",
        description="Multi-seed versions of the Layca paper's experiments "
        "on data available offline: Fig. 1 (Layca over alpha x rho(0)), "
        "Fig. 2 (SGD over learning rates), Fig. 3 (SGD + weight decay), "
        "Fig. 6 (Adam, RMSprop, Adagrad with and without Layca), Section 6 "
        "/ Fig. 8 (an MLP's first-layer features) and the "
        "re-initialization robustness study of Zhang et al. on the trained "
        "CNN and MLP. Writes results.json, one CSV history per run, the "
        "figures and report.md (the verdict on each claim, mean and spread "
        "over seeds) into --out. The default scale (177 runs) took 18 "
        "minutes with --jobs 2 on 2 idle CPU cores, 36 on 2 loaded ones.",
    )
    reproduce.add_argument(
        "--out",
        type=Path,
        default=Path("reproduce-out"),
        metavar="DIR",
        help="the output folder (created if its parent exists; default: "
        "%(default)s)",
    )
    reproduce.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"seeds per configuration (default: {len(default.seeds)}, or "
        f"{len(quick.seeds)} with --quick)",
    )
    reproduce.add_argument(
        "--seed",
        type=int,
        default=default.seeds[0],
        help="the first seed; runs use SEED .. SEED+N-1 (default: %(default)s)",
    )
    reproduce.add_argument(
        "--jobs",
        type=_positive_int,
        default=_settings.default_jobs(),
        metavar="N",
        help="worker processes; results do not depend on it (default: "
        f"%(default)s, the CPUs up to {_settings.MAX_JOBS})",
    )
    reproduce.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: reduced grids, {quick.epochs} CNN and "
        f"{quick.mlp_epochs} MLP epochs",
    )
    reproduce.add_argument(
        "--scale",
        type=_positive_float,
        default=1.0,
        help=f"multiply the epochs (CNN {default.epochs}, MLP "
        f"{default.mlp_epochs}) by this, e.g. 2.5 for the paper's 100 CNN "
        "epochs on a GPU (default: %(default)g)",
    )
    reproduce.add_argument(
        "--task",
        choices=_settings.TASKS,
        default=default.task,
        help="the CNN experiments' data and model: mnist1d (generated, "
        "1-D CNN), or the paper's cifar10 (C10-CNN1) and cifar100 "
        "(ResNet-32) from --data-dir (default: %(default)s)",
    )
    reproduce.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with the CIFAR python batches (--task cifar10/100) "
        "and/or the MNIST IDX files (then the MLP trains on MNIST); "
        "default $LAYCA_DATA_DIR. Nothing is downloaded.",
    )


def _missing(command: str, needed: list[str]) -> bool:
    """Prints which extras are missing, if any."""
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"layca-optax {command}: missing {', '.join(missing)}. "
            f"{_EXTRA_HINT}",
            file=sys.stderr,
        )
    return bool(missing)


def _demo(args: argparse.Namespace) -> int:
    needed = ["flax", "mnist1d"] + (["matplotlib"] if args.out else [])
    if _missing("demo", needed):
        return 1
    from layca_optax.experiments._report import format_report

    epochs = args.epochs
    if epochs is None:
        epochs = mnist1d.QUICK_EPOCHS if args.quick else mnist1d.DEFAULT_EPOCHS
    names = list(dict.fromkeys(args.optimizers))  # without repeats
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
        sgd_learning_rate=args.sgd_lr,
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


_REPRODUCE_NEEDS = ["flax", "mnist1d", "sklearn", "matplotlib", "tqdm"]


def _reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace):
    if _missing("reproduce", _REPRODUCE_NEEDS):
        return 1
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    from layca_optax.experiments._runner import check_data
    from layca_optax.experiments.data import DatasetError
    from layca_optax.experiments.reproduce import run_reproduce

    settings = _settings.make_settings(
        quick=args.quick,
        task=args.task,
        data_dir=None if args.data_dir is None else str(args.data_dir),
        seeds=args.seeds,
        first_seed=args.seed,
        scale=args.scale,
    )
    try:
        check_data(settings)
    except DatasetError as e:
        parser.error(str(e))
    command = shlex.join(["layca-optax", *args.argv])
    print(
        f"reproduce: {settings.task}, seeds {settings.seeds[0]}.."
        f"{settings.seeds[-1]}, CNN {settings.epochs} / MLP "
        f"{settings.mlp_epochs} epochs, {args.jobs} job(s), into "
        f"{args.out}",
        flush=True,
    )
    results = run_reproduce(
        settings,
        args.out,
        jobs=args.jobs,
        verbose=True,
        command=command,
    )
    print()
    for claim in results["claims"]:
        print(f"[{claim['verdict']}] {claim['claim']}")
    print(
        f"\nwrote results.json, report.md, the figures and histories/ in "
        f"{args.out} ({results['wall_seconds']:.0f} s)"
    )
    return 0


def _report(parser: argparse.ArgumentParser, args: argparse.Namespace):
    if _missing("report", ["matplotlib"]):
        return 1
    from layca_optax.experiments.reproduce import load_results, write_report

    try:
        results = load_results(args.out)
    except ValueError as e:
        parser.error(str(e))
    write_report(results, args.out)
    print(f"wrote report.md and the figures in {args.out}")
    return 0


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command in ("demo", "reproduce", "report") and args.out:
        _check_out(parser, args.out)
    if args.command == "demo":
        return _demo(args)
    if args.command == "reproduce":
        return _reproduce(parser, args)
    if args.command == "report":
        return _report(parser, args)
    raise AssertionError(f"unknown command {args.command!r}")  # unreachable


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``layca-optax``.

    SIGINT (Ctrl-C) and SIGTERM stop it within seconds, worker processes
    included: it prints one line (``layca-optax: interrupted (SIGINT)``)
    and exits with 130 (SIGINT) or 143 (SIGTERM), leaving only complete
    files (called with ``argv``, it returns the status instead).

    Args:
      argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
      The exit status: 0 on success.
    """
    parser = build_parser()
    program = argv is None  # not a call from Python: may end the process
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    command = lambda: _run(parser, args)
    return run_interruptible(PROG, command, exit_now=program)
