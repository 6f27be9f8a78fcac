"""The ``layca-optax`` commands: ``demo``, ``reproduce`` and ``report``.
Each imports what it trains or draws when it runs."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from collections.abc import Callable

from layca_optax.experiments import _settings, mnist1d


_EXTRA_HINT = (
    "It needs the examples extra: pip install '.[examples]' in a clone of "
    "the repository"
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


def demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax demo``: trains, prints the tables, writes ``--out``."""
    del parser
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


_REPRODUCE_NEEDS = ["flax", "mnist1d", "sklearn", "matplotlib", "tqdm"]


def reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax reproduce``: checks the data, trains every run, writes
    ``--out``, prints the verdicts."""
    if _missing("reproduce", _REPRODUCE_NEEDS):
        return 1
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    from layca_optax.experiments._tasks import check_data
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


def report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax report``: redraws the figures and ``report.md``."""
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


Command = Callable[[argparse.ArgumentParser, argparse.Namespace], int]

COMMANDS: dict[str, Command] = {
    "demo": demo,
    "reproduce": reproduce,
    "report": report,
}
"""Each command's function, by name."""
