"""Multi-seed reproduction of the Layca paper's findings, offline.

``layca-optax reproduce`` trains, for every seed, the paper's experiments
at laptop scale (see :func:`~layca_optax.experiments._experiments.experiments`)
on MNIST-1D (generated locally) and scikit-learn's 8x8 digits (bundled), or
on CIFAR-10/100 and MNIST from local files; then writes ``results.json``,
one CSV history per run, the figures and ``report.md``, which states claim
by claim whether the paper's findings hold here. ``layca-optax report``
rewrites the figures and the report from ``results.json``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layca_optax._io import atomic_write_text
from layca_optax.experiments import _repro_figures as figures
from layca_optax.experiments._claims import (
    MATCH_POINTS,
    T_THRESHOLD,
    check_claims,
    stats,
)
from layca_optax.experiments._experiments import experiments
from layca_optax.experiments._report import (
    history,
    progress_bar,
    write_json,
    write_png,
)
from layca_optax.experiments._runner import Unit, describe, run_all
from layca_optax.experiments._settings import Settings


RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
HISTORIES = "histories"


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
            f"{unit.experiment} #{unit.config} seed {unit.seed}: test "
            f"{entry['test_accuracy']:.1%} ({entry['seconds']:.0f} s)"
        )
        if bar.disable and verbose:
            print(f"[{count[0]}/{total}] {text}", file=sys.stderr, flush=True)
        else:
            bar.set_postfix_str(text, refresh=False)
            bar.update()

    return bar, done


def run_reproduce(
    settings: Settings,
    out: str | Path | None = None,
    *,
    jobs: int = 1,
    verbose: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains every run of the reproduction; optionally writes the outputs.

    Args:
      settings: what to train (task, seeds, epochs, quick grids...).
      out: a folder (created if needed) for the outputs, see
        :func:`write_outputs`; None writes nothing.
      jobs: worker processes; results do not depend on it.
      verbose: a progress bar (or a line per run) on stderr.
      command: the command line, recorded in the report.

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
        "experiments": {
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
        },
    }
    results["claims"] = check_claims(_table(results))
    if out is not None:
        write_outputs(results, out)
    return results


def _table(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [stats(c) for c in e["configs"]]
        for name, e in results["experiments"].items()
    }


def _layers(results: Mapping[str, Any], experiment: str) -> list[str]:
    task = results["experiments"][experiment]["task"]
    return results["settings"][task]["layers"]


def write_figures(results: Mapping[str, Any], out: Path) -> list[str]:
    """Draws every figure into ``out`` (atomically); returns their names."""
    exps = results["experiments"]
    drawn = {
        "fig1": figures.fig1(exps["fig1"]["configs"], _layers(results, "fig1")),
        "fig2": figures.curves_figure(
            exps["fig2"]["configs"],
            _layers(results, "fig2"),
            "Fig. 2: SGD without weight decay, by learning rate",
        ),
        "fig3": figures.curves_figure(
            exps["fig3"]["configs"],
            _layers(results, "fig3"),
            f"Fig. 3: {exps['fig3']['title']}, by learning rate",
        ),
        "fig6": figures.fig6(exps["fig6"]["configs"], _layers(results, "fig6")),
        "fig8": figures.fig8(exps["fig8"]["configs"], _layers(results, "fig8")),
        "reinit": figures.reinit(_reinit_studies(results)),
    }
    for key, fig in drawn.items():
        write_png(out / figures.FIGURES[key], fig, dpi=90)
    return [figures.FIGURES[k] for k in drawn]


def _reinit_studies(results: Mapping[str, Any]) -> dict[str, list]:
    studies: dict[str, list] = {}
    for e in results["experiments"].values():
        for c in e["configs"]:
            entries = [r["reinit"] for r in c["runs"] if "reinit" in r]
            if entries:
                model = "CNN" if e["task"] == "cnn" else "MLP"
                studies[f"{model}, {c['label']}"] = entries
    return studies


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
      ValueError: it is missing, not JSON, or not a reproduction's results
        (the message names the path).
    """
    path = Path(out) / RESULTS_NAME
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{path} not found: run `reproduce --out` first"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable JSON file: {e}") from None
    keys = ("experiments", "settings", "claims")
    if not isinstance(results, dict) or any(k not in results for k in keys):
        raise ValueError(
            f"{path} is not the results of `layca-optax reproduce` "
            f"(needs the keys {', '.join(keys)})"
        )
    return results


def write_report(results: Mapping[str, Any], out: str | Path) -> None:
    """Draws the figures and writes ``report.md`` into ``out``."""
    out = Path(out)
    names = write_figures(results, out)
    atomic_write_text(out / REPORT_NAME, markdown(results, names))


def _row(s: Mapping[str, Any]) -> str:
    return (
        f"| {s['label']} | {100 * s['test_mean']:.2f} +- "
        f"{100 * s['test_std']:.2f} | {100 * s['train_mean']:.2f} | "
        f"{s['rotation_mean']:.3f} | {s['rotation_min']:.3f} |"
    )


def _table_md(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "| configuration | test acc. % (mean +- sd) | train acc. % | "
        "rotation, mean of layers | rotation, least rotated layer |\n"
        "| --- | --- | --- | --- | --- |"
    )
    return "\n".join([head, *map(_row, rows)])


def markdown(results: Mapping[str, Any], images: Sequence[str]) -> str:
    """The report: the verdicts, then each experiment's table and figure."""
    s = results["settings"]
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [
        "# Layer rotation: the paper's findings, reproduced offline",
        "",
        f"Command: `{results.get('command') or 'layca-optax reproduce'}` "
        f"({results['jobs']} job(s), {results['wall_seconds']:.0f} s wall, "
        f"{s['cpu_count']} CPUs, {s['backend']}; layca_optax "
        f"{s['layca_optax_version']}, jax {s['jax_version']}, Python "
        f"{s['python']}). Seeds: {seeds}"
        + (" (**--quick**: reduced grids, a smoke test)" if s["quick"] else "")
        + ".",
        "",
        f"- CNN experiments: {s['cnn']['description']}; {s['cnn']['epochs']} "
        f"epochs, batch {s['cnn']['batch_size']}, learning rate x"
        f"{s['cnn']['decay_factor']:g} at {s['cnn']['decay_at']} of the run.",
        f"- MLP experiment: {s['mlp']['description']}; "
        f"{s['mlp']['epochs']} epochs, batch {s['mlp']['batch_size']}.",
        "- Rotation = cosine distance of each layer's kernel to its initial "
        "value at the end of training. Test accuracy after the last epoch.",
        "",
        "## Verdicts",
        "",
        f"Welch's t over seeds; |t| >= {T_THRESHOLD:g} counts as a "
        f"difference, a match is within {MATCH_POINTS} points or |t| < "
        f"{T_THRESHOLD:g}. Best rates are picked on test accuracy (no "
        "validation split), which favours the tuned baselines.",
        "",
        "| claim | verdict | evidence |",
        "| --- | --- | --- |",
    ]
    for c in results["claims"]:
        lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} |")
    table = _table(results)
    keys = list(figures.FIGURES)
    for name, e in results["experiments"].items():
        image = images[keys.index(name)]
        lines += [
            "",
            f"## {name}: {e['title']}",
            "",
            _table_md(table[name]),
            "",
            f"![{name}]({image})",
        ]
    lines += [
        "",
        "## Re-initialization robustness (Zhang, Bengio & Singer, 2022)",
        "",
        "Test accuracy with one layer reset to its value at a checkpoint "
        "(init, then epochs), or re-drawn from its initial distribution "
        "(`rerandom`), the other layers trained; mean over seeds. A layer is "
        "*robust* when resetting it to init costs at most 1 point.",
    ]
    for label, entries in _reinit_studies(results).items():
        result = figures.mean_reinit(entries)
        lines += ["", f"### {label}", "", result.to_markdown(digits=3)]
    lines += ["", f"![reinit]({images[keys.index('reinit')]})", ""]
    return "\n".join(lines)
