"""The ``layca-optax`` commands: ``demo``, ``reproduce``, ``report`` and
``modular``. Each imports what it trains or draws when it runs."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from layca_optax.experiments import _settings, mnist1d, modular


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


def _check_outputs(
    parser: argparse.ArgumentParser,
    out: Path,
    files: Iterable[str] = (),
    folders: Iterable[str] = (),
) -> None:
    """Exits (status 2) if something in ``out`` is in the way of the
    outputs: a folder where a file is written (``files``, relative to
    ``out``), or a file or broken link where a folder is (``folders``).
    ``_cli`` checked that ``out`` is, or can be created as, a writable
    folder; it is created when the outputs are written (an interrupted
    run leaves nothing)."""
    try:
        for name in folders:
            path = out / name
            if (path.is_symlink() or path.exists()) and not path.is_dir():
                parser.error(
                    f"--out {out}: {name} exists and is not a directory"
                )
        for name in files:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                parser.error(
                    f"--out {out}: {name} is a directory, where a file is "
                    "written"
                )
    except OSError as e:
        parser.error(f"--out {out}: {e.strerror or e}")


def demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax demo``: trains, prints the tables, writes ``--out``."""
    needed = ["flax", "mnist1d"] + (["matplotlib"] if args.out else [])
    if _missing("demo", needed):
        return 1
    from layca_optax.experiments._report import format_report

    epochs = args.epochs
    if epochs is None:
        epochs = mnist1d.QUICK_EPOCHS if args.quick else mnist1d.DEFAULT_EPOCHS
    names = list(dict.fromkeys(args.optimizers))  # without repeats
    if args.out is not None:
        written = [mnist1d.RESULTS_NAME, mnist1d.FIGURE_NAME]
        written += [mnist1d.REPORT_NAME, *map(mnist1d.history_name, names)]
        _check_outputs(parser, args.out, written)
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


def _data_problem(data: Any, batch_size: int) -> str | None:
    """What makes ``data`` (a ``Dataset``) unfit to train on, if anything."""
    import numpy as np

    n_train, n_test = len(data.x_train), len(data.x_test)
    if n_train == 0 or n_test == 0:
        return f"{n_train} train and {n_test} test images"
    if n_train < batch_size:
        return f"{n_train} train images make no batch of {batch_size}"
    classes = len(np.unique(data.y_train))
    if classes < 2:
        return f"the train labels hold {classes} class, not 2 or more"
    return None


def _check_tasks(parser: argparse.ArgumentParser, settings: Any) -> None:
    """Loads every dataset the run needs and checks that each can be
    trained on (images in both sets, a full batch, two classes or more),
    so that bad files are reported before any training."""
    from layca_optax.experiments import _tasks
    from layca_optax.experiments.data import ENV_VAR, DatasetError

    try:
        _tasks.check_data(settings)
        tasks = [_tasks.cnn_task(settings), _tasks.mlp_task(settings)]
    except DatasetError as e:
        parser.error(str(e))
    except OSError as e:  # a folder name too long, unreadable...
        where = "--data-dir" if settings.data_dir else f"${ENV_VAR}"
        parser.error(f"{where}: {e.strerror or e}: {e.filename}")
    folder = settings.data_dir or os.environ.get(ENV_VAR)
    for task in tasks:
        problem = _data_problem(task.data, task.batch_size)
        if problem is not None:
            parser.error(
                f"{task.data.name} in {folder}: {problem}; nothing trained"
            )


def _last_seed(
    parser: argparse.ArgumentParser, args: argparse.Namespace, base: Any
) -> int:
    """The number of seeds (``--seeds``, else ``base.seeds``'s); exits
    (status 2) unless the seeds ``--seed .. --seed + --seeds - 1`` are at
    most ``MAX_SEED``."""
    count = len(base.seeds) if args.seeds is None else args.seeds
    last = args.seed + count - 1
    if last > _settings.MAX_SEED:
        parser.error(
            f"argument --seed: the seeds {args.seed}..{last} must be at most "
            f"{_settings.MAX_SEED}"
        )
    return count


_REPRODUCE_NEEDS = ["flax", "mnist1d", "sklearn", "matplotlib", "tqdm"]


def reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax reproduce``: checks the data and ``--out``, trains
    every run, writes ``--out``, prints the verdicts."""
    if _missing("reproduce", _REPRODUCE_NEEDS):
        return 1
    _last_seed(
        parser, args, _settings.QUICK if args.quick else _settings.DEFAULT
    )
    try:
        if args.data_dir is not None and not args.data_dir.is_dir():
            parser.error(f"--data-dir {args.data_dir} is not a folder")
    except OSError as e:
        parser.error(f"--data-dir {args.data_dir}: {e.strerror or e}")
    from layca_optax.experiments import reproduce as repro
    from layca_optax.experiments._experiments import experiments
    from layca_optax.experiments._repro_figures import FIGURES

    settings = _settings.make_settings(
        quick=args.quick,
        task=args.task,
        data_dir=None if args.data_dir is None else str(args.data_dir),
        seeds=args.seeds,
        first_seed=args.seed,
        scale=args.scale,
    )
    _check_tasks(parser, settings)
    study = None
    if not args.no_modular:
        study = dataclasses.replace(
            modular.QUICK if settings.quick else modular.DEFAULT,
            seeds=settings.seeds,
        )
    histories = [
        repro.history_path(e.name, c.label, seed)
        for e in experiments(settings.quick)
        for c in e.configs
        for seed in settings.seeds
    ]
    written = [repro.RESULTS_NAME, repro.REPORT_NAME, *FIGURES.values()]
    written += [*modular.FIGURE_NAMES.values()] if study else []
    _check_outputs(parser, args.out, [*written, *histories], [repro.HISTORIES])
    command = shlex.join(["layca-optax", *args.argv])
    print(
        f"reproduce: {settings.task}, seeds {settings.seeds[0]}.."
        f"{settings.seeds[-1]}, CNN {settings.epochs} / MLP "
        f"{settings.mlp_epochs} epochs, {args.jobs} job(s), into "
        f"{args.out}",
        flush=True,
    )
    results = repro.run_reproduce(
        settings,
        args.out,
        jobs=args.jobs,
        verbose=True,
        command=command,
        modular_settings=study,
    )
    print()
    claims = results.get("modular", {}).get("claims", [])
    for claim in [*results["claims"], *claims]:
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
    from layca_optax.experiments._repro_figures import FIGURES
    from layca_optax.experiments.reproduce import (
        REPORT_NAME,
        load_results,
        write_report,
    )

    try:
        results = load_results(args.out)
    except ValueError as e:
        parser.error(str(e))
    _check_outputs(parser, args.out, [REPORT_NAME, *FIGURES.values()])
    write_report(results, args.out)
    print(f"wrote report.md and the figures in {args.out}")
    return 0


def modular_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> int:
    """``layca-optax modular``: checks the arguments and ``--out``, trains
    every configuration, writes ``--out``, prints the verdicts."""
    if _missing("modular", ["flax", "matplotlib"]):
        return 1
    base = modular.QUICK if args.quick else modular.DEFAULT
    count = _last_seed(parser, args, base)
    steps = base.steps if args.steps is None else args.steps
    if steps % base.eval_every:
        parser.error(
            f"argument --steps: must be a multiple of {base.eval_every} (the "
            f"evaluation interval{' of --quick' if args.quick else ''}), got "
            f"{steps}"
        )
    settings = modular.make_settings(
        quick=args.quick, seeds=count, first_seed=args.seed, steps=steps
    )
    written = [modular.RESULTS_NAME, modular.REPORT_NAME]
    _check_outputs(parser, args.out, [*written, *modular.FIGURE_NAMES.values()])
    print(
        f"modular: a + b mod {settings.p}, {len(modular.units(settings))} "
        f"configurations x seeds {settings.seeds[0]}..{settings.seeds[-1]}, "
        f"{settings.steps} steps, {args.jobs} job(s), into {args.out}",
        flush=True,
    )
    results = modular.run_modular(
        settings,
        args.out,
        args.jobs,
        verbose=True,
        command=shlex.join(["layca-optax", *args.argv]),
    )
    print()
    for claim in results["results"]["claims"]:
        print(f"[{claim['verdict']}] {claim['claim']}")
    print(
        f"\nwrote {', '.join(written)} and the figures in {args.out} "
        f"({results['wall_seconds']:.0f} s)"
    )
    return 0


Command = Callable[[argparse.ArgumentParser, argparse.Namespace], int]

COMMANDS: dict[str, Command] = {
    "demo": demo,
    "reproduce": reproduce,
    "report": report,
    "modular": modular_command,
}
"""Each command's function, by name."""
