"""The modular-arithmetic study run: every configuration trained (in this
process or spread over worker processes), summarized and written."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.study import timed_results
from layca_optax.experiments.common.workers import run_units
from layca_optax.experiments.modular.report import write_outputs
from layca_optax.experiments.modular.settings import (
    ModularSettings,
    Unit,
    units,
)
from layca_optax.experiments.modular.stats import summarize
from layca_optax.experiments.modular.train import train_unit


def train_all(
    settings: ModularSettings,
    jobs: int,
    on_done: Callable[[Unit, Mapping[str, Any]], None],
) -> list[dict[str, Any]]:
    """Every unit's entry, in :func:`units` order, in this process
    (``jobs`` 1) or spread over ``jobs`` worker processes; ``on_done`` is
    called with each unit as soon as it finishes."""
    fn = functools.partial(train_unit, settings)
    return [entry for _, entry in run_units(fn, units(settings), jobs, on_done)]


def _train_all(
    settings: ModularSettings, jobs: int, verbose: bool
) -> list[dict[str, Any]]:
    """:func:`train_all`, a line per configuration on stderr if
    ``verbose``."""
    start = time.perf_counter()

    def done(unit: Unit, entry: Mapping[str, Any]) -> None:
        if verbose:
            tests = [r["final_test"] for r in entry["runs"]]
            shown = ", ".join("n/a" if t is None else f"{t:.1%}" for t in tests)
            print(
                f"[{time.perf_counter() - start:.0f} s] {unit.label}: test "
                f"{shown} ({entry['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    return train_all(settings, jobs, done)


def run_modular(
    settings: ModularSettings,
    out: str | Path | None = None,
    jobs: int = 1,
    *,
    verbose: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains the study; writes ``modular.json``, its figures and
    ``modular.md`` into ``out`` (created if needed) unless None.

    Args:
      settings: what to train.
      out: the output folder, or None.
      jobs: worker processes (1: this process); results do not depend on it.
      verbose: a line per configuration on stderr.
      command: the command line, recorded in the outputs.

    Returns:
      The content of ``modular.json``: ``command``, ``jobs``,
      ``wall_seconds``, ``results``
      (:func:`~layca_optax.experiments.modular.stats.summarize`'s block) and
      ``entries`` (every run's curves).
    """
    return timed_results(
        functools.partial(_train_all, settings, jobs, verbose),
        summarize,
        write_outputs,
        out=out,
        jobs=jobs,
        command=command,
    )
