"""``layca-optax reproduce`` and ``report``: the arguments and the data
checked before any training, the runs, the verdicts printed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from typing import Any

import numpy as np

from layca_optax.experiments.common.command import check_outputs, last_seed
from layca_optax.experiments.data import ENV_VAR, DatasetError
from layca_optax.experiments.modular import settings as modular
from layca_optax.experiments.reproduce import run, settings, tasks
from layca_optax.experiments.reproduce.experiments import experiments
from layca_optax.experiments.reproduce.figures import FIGURES


def _data_problem(data: Any, batch_size: int) -> str | None:
    """What makes ``data`` (a ``Dataset``) unfit to train on, if anything."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    if n_train == 0 or n_test == 0:
        return f"{n_train} train and {n_test} test images"
    if n_train < batch_size:
        return f"{n_train} train images make no batch of {batch_size}"
    classes = len(np.unique(data.y_train))
    if classes < 2:
        return f"the train labels hold {classes} class, not 2 or more"
    return None


def _check_tasks(parser: argparse.ArgumentParser, chosen: Any) -> None:
    """Loads every dataset the run needs and checks that each can be
    trained on (images in both sets, a full batch, two classes or more),
    so that bad files are reported before any training."""
    try:
        tasks.check_data(chosen)
        needed = [tasks.cnn_task(chosen), tasks.mlp_task(chosen)]
    except DatasetError as e:
        parser.error(str(e))
    except OSError as e:  # a folder name too long, unreadable...
        where = "--data-dir" if chosen.data_dir else f"${ENV_VAR}"
        parser.error(f"{where}: {e.strerror or e}: {e.filename}")
    folder = chosen.data_dir or os.environ.get(ENV_VAR)
    for task in needed:
        problem = _data_problem(task.data, task.batch_size)
        if problem is not None:
            parser.error(
                f"{task.data.name} in {folder}: {problem}; nothing trained"
            )


def reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax reproduce``: checks the data and ``--out``, trains
    every run, writes ``--out``, prints the verdicts."""
    last_seed(parser, args, settings.QUICK if args.quick else settings.DEFAULT)
    try:
        if args.data_dir is not None and not args.data_dir.is_dir():
            parser.error(f"--data-dir {args.data_dir} is not a folder")
    except OSError as e:
        parser.error(f"--data-dir {args.data_dir}: {e.strerror or e}")
    chosen = settings.make_settings(
        quick=args.quick,
        task=args.task,
        data_dir=None if args.data_dir is None else str(args.data_dir),
        seeds=args.seeds,
        first_seed=args.seed,
        scale=args.scale,
    )
    _check_tasks(parser, chosen)
    study = None
    if not args.no_modular:
        study = dataclasses.replace(
            modular.QUICK if chosen.quick else modular.DEFAULT,
            seeds=chosen.seeds,
        )
    histories = [
        run.history_path(e.name, c.label, seed)
        for e in experiments(chosen.quick)
        for c in e.configs
        for seed in chosen.seeds
    ]
    written = [run.RESULTS_NAME, run.REPORT_NAME, *FIGURES.values()]
    written += [*modular.FIGURE_NAMES.values()] if study else []
    check_outputs(parser, args.out, [*written, *histories], [run.HISTORIES])
    command = shlex.join(["layca-optax", *args.argv])
    print(
        f"reproduce: {chosen.task}, seeds {chosen.seeds[0]}.."
        f"{chosen.seeds[-1]}, CNN {chosen.epochs} / MLP "
        f"{chosen.mlp_epochs} epochs, {args.jobs} job(s), into "
        f"{args.out}",
        flush=True,
    )
    results = run.run_reproduce(
        chosen,
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
    try:
        results = run.load_results(args.out)
    except ValueError as e:
        parser.error(str(e))
    check_outputs(parser, args.out, [run.REPORT_NAME, *FIGURES.values()])
    run.write_report(results, args.out)
    print(f"wrote report.md and the figures in {args.out}")
    return 0
