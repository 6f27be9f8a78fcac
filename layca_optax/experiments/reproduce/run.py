"""Multi-seed reproduction of the Layca paper's findings, offline.

``layca-optax reproduce`` trains, for every seed, the paper's experiments
at laptop scale (see
:func:`~layca_optax.experiments.reproduce.experiments.experiments`)
on MNIST-1D (generated locally) and scikit-learn's 8x8 digits (bundled), or
on CIFAR-10/100 and MNIST from local files; then writes ``results.json``,
one CSV history per run, the figures and ``report.md``, which states claim
by claim whether the paper's findings hold here; by default also the
modular-arithmetic transformer study
(:mod:`~layca_optax.experiments.modular`). ``layca-optax report`` rewrites
the figures and the report from ``results.json``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.files import write_json
from layca_optax.experiments.common.format import number
from layca_optax.experiments.common.progress import progress_bar
from layca_optax.experiments.common.runs import history
from layca_optax.experiments.modular import (
    run as modular_run,
    stats as modular_stats,
)
from layca_optax.experiments.modular.settings import (
    ModularSettings,
    Unit as ModularUnit,
    units,
)
from layca_optax.experiments.reproduce import robustness
from layca_optax.experiments.reproduce.experiments import experiments
from layca_optax.experiments.reproduce.report import (
    REPORT_NAME,
    markdown,
    write_figures,
    write_report,
)
from layca_optax.experiments.reproduce.results_check import (
    MalformedResults,
    check_results,
)
from layca_optax.experiments.reproduce.settings import Settings
from layca_optax.experiments.reproduce.stats import table, verdicts
from layca_optax.experiments.reproduce.train import Unit, describe, run_all


__all__ = (
    "HISTORIES",
    "MAX_RESULTS_BYTES",
    "REPORT_NAME",
    "RESULTS_NAME",
    "history_path",
    "load_results",
    "markdown",
    "run_reproduce",
    "write_figures",
    "write_outputs",
    "write_report",
)

RESULTS_NAME = "results.json"
HISTORIES = "histories"

MAX_RESULTS_BYTES = 1 << 30
"""The largest ``results.json`` :func:`load_results` reads (1 GiB; the
default scale writes about 2 MB, 100 seeds about 75 MB)."""


def history_path(experiment: str, label: str, seed: int) -> str:
    """A run's CSV history, relative to ``--out``."""
    safe = re.sub(r"[^A-Za-z0-9.^=-]+", "_", label).strip("_")
    return f"{HISTORIES}/{experiment}_{safe}_seed{seed}.csv"


def _progress(total: int, verbose: bool):
    """A tqdm bar over runs (a line per run when stderr is no terminal)."""
    bar = progress_bar(total, "run", verbose=verbose)
    count = [0]

    def done(unit: Unit, entry: Mapping[str, Any]) -> None:
        count[0] += 1
        text = (
            f"{unit.experiment} #{unit.config} seed {unit.seed}: validation "
            f"{number(entry['validation_accuracy'], '.1%')}, test "
            f"{number(entry['test_accuracy'], '.1%')} "
            f"({entry['seconds']:.0f} s)"
        )
        if bar.disable and verbose:
            print(f"[{count[0]}/{total}] {text}", file=sys.stderr, flush=True)
        else:
            bar.set_postfix_str(text, refresh=False)
            bar.update()

    return bar, done


def _experiments(
    settings: Settings, found: Mapping[tuple[str, int], list]
) -> dict[str, Any]:
    """The ``experiments`` block: each configuration with its runs."""
    return {
        e.name: {
            "title": e.title,
            "task": e.task,
            "configs": [
                {
                    "label": c.label,
                    "kind": c.kind,
                    "hparams": dict(c.hparams),
                    "runs": found[(e.name, i)],
                }
                for i, c in enumerate(e.configs)
            ],
        }
        for e in experiments(settings.quick)
    }


def _modular_block(
    settings: ModularSettings, jobs: int, verbose: bool
) -> dict[str, Any]:
    """The modular-arithmetic study's results block (its configurations
    spread over ``jobs`` processes, as the paper's runs)."""
    count = len(units(settings))
    bar = progress_bar(count, "configuration", verbose=verbose)

    def done(unit: ModularUnit, entry: Mapping[str, Any]) -> None:
        tests = ", ".join(number(r["final_test"], ".1%") for r in entry["runs"])
        text = f"modular {unit.label}: test {tests} ({entry['seconds']:.0f} s)"
        if bar.disable and verbose:
            print(text, file=sys.stderr, flush=True)
        else:
            bar.set_postfix_str(text, refresh=False)
            bar.update()

    try:
        entries = modular_run.train_all(settings, jobs, done)
    finally:
        bar.close()
    return modular_stats.summarize(entries)


def run_reproduce(
    settings: Settings,
    out: str | Path | None = None,
    *,
    jobs: int = 1,
    verbose: bool = False,
    command: str | None = None,
    modular_settings: ModularSettings | None = None,
) -> dict[str, Any]:
    """Trains every run of the reproduction; optionally writes the outputs.

    Args:
      settings: what to train (task, seeds, epochs, quick grids...).
      out: a folder (created if needed) for the outputs, see
        :func:`write_outputs`; None writes nothing.
      jobs: worker processes; results do not depend on it.
      verbose: a progress bar (or a line per run) on stderr.
      command: the command line, recorded in the report.
      modular_settings: also run the modular-arithmetic transformer study
        (:mod:`~layca_optax.experiments.modular`) with these settings; its
        results block is ``results["modular"]``. None: not run.

    Returns:
      The content of ``results.json``.
    """
    start = time.perf_counter()
    found: dict[tuple[str, int], list] = {}
    total = sum(
        len(e.configs) * len(settings.seeds)
        for e in experiments(settings.quick)
    )
    bar, done = _progress(total, verbose)
    try:
        for unit, entry in run_all(settings, jobs, on_done=done):
            found.setdefault((unit.experiment, unit.config), []).append(entry)
    finally:
        bar.close()
    results: dict[str, Any] = {
        "command": command,
        "jobs": jobs,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "settings": describe(settings),
        "experiments": _experiments(settings, found),
    }
    results["claims"] = [
        *verdicts(table(results)),
        robustness.claim(results),
    ]
    if modular_settings is not None:
        results["modular"] = _modular_block(modular_settings, jobs, verbose)
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
    if out is not None:
        write_outputs(results, out)
    return results


def write_outputs(results: Mapping[str, Any], out: str | Path) -> None:
    """Writes into ``out``, each file atomically: one CSV history per run
    (``histories/``), the figures, ``report.md``, and ``results.json``
    last (its presence means the rest is complete)."""
    out = Path(out)
    (out / HISTORIES).mkdir(parents=True, exist_ok=True)
    for name, e in results["experiments"].items():
        for c in e["configs"]:
            for run in c["runs"]:
                path = out / history_path(name, c["label"], run["seed"])
                history(run).save_csv(path)
    write_report(results, out)
    write_json(out / RESULTS_NAME, results)


def load_results(out: str | Path) -> dict[str, Any]:
    """Reads ``out/results.json`` written by ``reproduce``.

    Raises:
      ValueError: it is missing, not a regular file, larger than
        :data:`MAX_RESULTS_BYTES`, not JSON, or not a reproduction's results
        (an entry the report reads is missing or of the wrong type); the
        message names the path and the problem.
    """
    path = Path(out) / RESULTS_NAME
    try:
        if not path.exists():
            raise ValueError(f"{path} not found: run `reproduce --out` first")
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file")
        with path.open("rb") as f:
            raw = f.read(MAX_RESULTS_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_RESULTS_BYTES:
        raise ValueError(
            f"{path} is too large: over {MAX_RESULTS_BYTES:,} bytes"
        )
    try:
        results = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise ValueError(f"{path} is not a readable JSON file: {why}") from None
    try:
        check_results(results)
    except MalformedResults as e:
        raise ValueError(
            f"{path} is not the results of `layca-optax reproduce`: {e}"
        ) from None
    return results
