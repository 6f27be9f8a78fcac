"""The language-model study run: every family tuned and run (in this
process or spread over worker processes, one family per process),
summarized and written."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.study import timed_results
from layca_optax.experiments.common.workers import run_units
from layca_optax.experiments.lm.report import write_outputs
from layca_optax.experiments.lm.settings import FAMILIES, LMSettings
from layca_optax.experiments.lm.stats import summarize
from layca_optax.experiments.lm.train import train_family


def _train_all(
    settings: LMSettings, jobs: int, verbose: bool
) -> list[dict[str, Any]]:
    """Every family's entry, in :data:`FAMILIES` order; a line per family
    on stderr if ``verbose``."""
    start = time.perf_counter()

    def done(family: str, entry: dict[str, Any]) -> None:
        if verbose:
            vals = ", ".join(f"{r['final_val_loss']}" for r in entry["runs"])
            print(
                f"[{time.perf_counter() - start:.0f} s] {entry['label']}: "
                f"final val. loss {vals} ({entry['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    fn = functools.partial(train_family, settings)
    return [entry for _, entry in run_units(fn, FAMILIES, jobs, done)]


def run_lm(
    settings: LMSettings,
    out: str | Path | None = None,
    jobs: int = 1,
    *,
    verbose: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains the study; writes ``results.json``, ``report.md`` and the
    figures into ``out`` (created if needed) unless None.

    Args:
      settings: what to train.
      out: the output folder, or None.
      jobs: worker processes (1: this process); results do not depend on
        it (the characters per second do).
      verbose: a line per family on stderr.
      command: the command line, recorded in the outputs.

    Returns:
      The content of ``results.json``: ``command``, ``jobs``,
      ``wall_seconds``, ``results``
      (:func:`~layca_optax.experiments.lm.stats.summarize`'s block) and
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
