"""``layca-optax lm``: the arguments and ``--out`` checked, the text read
and split, every family tuned and run, the verdicts printed."""

from __future__ import annotations

import argparse
import shlex
import sys

import jax

from layca_optax.experiments.common.command import check_outputs, last_seed
from layca_optax.experiments.common.study import print_claims
from layca_optax.experiments.data import DatasetError
from layca_optax.experiments.lm import run, settings
from layca_optax.experiments.lm.train import load_data


def lm(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``layca-optax lm``: checks the arguments, ``--out`` and the text,
    trains every family, writes ``--out``, prints the verdicts."""
    base = (
        settings.QUICK
        if args.quick
        else settings.SCALE
        if args.scale
        else settings.DEFAULT
    )
    count = last_seed(parser, args, base)
    steps = base.steps if args.steps is None else args.steps
    if steps % base.eval_every:
        parser.error(
            f"argument --steps: must be a multiple of {base.eval_every} (the "
            f"evaluation interval), got {steps}"
        )
    text = None if args.text is None else str(args.text)
    chosen = settings.make_settings(
        quick=args.quick,
        scale=args.scale,
        text=text,
        seeds=count,
        first_seed=args.seed,
        steps=steps,
    )
    if chosen.scale and jax.default_backend() == "cpu":
        print(
            f"lm: warning: --scale ({chosen.depth} blocks of width "
            f"{chosen.width}, {chosen.batch} x {chosen.length} characters a "
            f"step, {settings.runs(chosen)} runs of {chosen.steps} steps) is "
            "sized for a GPU; on this CPU expect hours per run",
            file=sys.stderr,
            flush=True,
        )
    written = [settings.RESULTS_NAME, settings.REPORT_NAME]
    check_outputs(parser, args.out, [*written, *settings.FIGURE_NAMES.values()])
    try:
        data = load_data(chosen.text, chosen.length)
    except DatasetError as e:
        parser.error(str(e))
    print(
        f"lm: {data.name} ({sum(data.sizes.values()):,} characters), "
        f"{settings.runs(chosen)} runs of {chosen.steps} steps, "
        f"{args.jobs} job(s), into {args.out}",
        flush=True,
    )
    results = run.run_lm(
        chosen,
        args.out,
        args.jobs,
        verbose=True,
        command=shlex.join(["layca-optax", *args.argv]),
    )
    print_claims(results, written, args.out)
    return 0
