"""``layca-optax demo``: checks ``--out``, trains, prints the tables."""

from __future__ import annotations

import argparse

from layca_optax.experiments.common.command import check_outputs
from layca_optax.experiments.demo import run, settings
from layca_optax.experiments.demo.report import format_report


def demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax demo``: trains, prints the tables, writes ``--out``."""
    epochs = args.epochs
    if epochs is None:
        epochs = (
            settings.QUICK_EPOCHS if args.quick else settings.DEFAULT_EPOCHS
        )
    names = list(dict.fromkeys(args.optimizers))  # without repeats
    if args.out is not None:
        written = [settings.RESULTS_NAME, settings.FIGURE_NAME]
        written += [settings.REPORT_NAME, *map(settings.history_name, names)]
        check_outputs(parser, args.out, written)
    print(
        f"{', '.join(names)} on MNIST-1D: 1-D CNN, {epochs} epochs, "
        f"seed {args.seed}",
        flush=True,
    )
    results = run.run_demo(
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
        written = [settings.RESULTS_NAME, settings.FIGURE_NAME]
        written += [settings.REPORT_NAME, "history_*.csv"]
        print(f"\nwrote {', '.join(written)} in {args.out}")
    return 0
