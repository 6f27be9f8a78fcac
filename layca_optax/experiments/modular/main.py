"""``layca-optax modular``: the arguments and ``--out`` checked, every
configuration trained, the verdicts printed."""

from __future__ import annotations

import argparse
import shlex

from layca_optax.experiments.common.command import check_outputs, last_seed
from layca_optax.experiments.common.study import print_claims
from layca_optax.experiments.modular import run, settings


def modular(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax modular``: checks the arguments and ``--out``, trains
    every configuration, writes ``--out``, prints the verdicts."""
    base = settings.QUICK if args.quick else settings.DEFAULT
    count = last_seed(parser, args, base)
    steps = base.steps if args.steps is None else args.steps
    if steps % base.eval_every:
        parser.error(
            f"argument --steps: must be a multiple of {base.eval_every} (the "
            f"evaluation interval{' of --quick' if args.quick else ''}), got "
            f"{steps}"
        )
    chosen = settings.make_settings(
        quick=args.quick, seeds=count, first_seed=args.seed, steps=steps
    )
    written = [settings.RESULTS_NAME, settings.REPORT_NAME]
    check_outputs(parser, args.out, [*written, *settings.FIGURE_NAMES.values()])
    print(
        f"modular: a + b mod {chosen.p}, {len(settings.units(chosen))} "
        f"configurations x seeds {chosen.seeds[0]}..{chosen.seeds[-1]}, "
        f"{chosen.steps} steps, {args.jobs} job(s), into {args.out}",
        flush=True,
    )
    results = run.run_modular(
        chosen,
        args.out,
        args.jobs,
        verbose=True,
        command=shlex.join(["layca-optax", *args.argv]),
    )
    print_claims(results, written, args.out)
    return 0
