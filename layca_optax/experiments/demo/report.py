"""The demo's report: its text table, ``report.md``, and every output
written into ``--out``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.files import write_json, write_text
from layca_optax.experiments.common.runs import history, short_name
from layca_optax.experiments.demo import settings
from layca_optax.experiments.demo.figures import write_figure


def format_report(results: Mapping[str, Any]) -> str:
    """The summary table and each layer's final rotation, as text.

    Args:
      results: what :func:`~layca_optax.experiments.demo.run.run_demo` returns.

    Returns:
      The two tables and the optimizers' definitions, ready to print.
    """
    runs = results["optimizers"]
    header = (
        f"{'optimizer':<11} {'train acc':>9} {'test acc':>8} "
        f"{'mean rot':>8} {'min rot':>7} {'wall s':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, run in runs.items():
        lines.append(
            f"{name:<11} {run['train_accuracy']:>9.2%} "
            f"{run['test_accuracy']:>8.2%} {run['rotation_mean']:>8.3f} "
            f"{run['rotation_min']:>7.3f} {run['seconds']:>6.1f}"
        )
    lines += ["", "final layer rotation (cosine distance to init):"]
    names = list(runs)
    width = max(8, *map(len, names))
    lines.append(f"{'layer':<10} " + " ".join(f"{n:>{width}}" for n in names))
    for layer in results["layers"]:
        values = (runs[n]["final_rotation"][layer] for n in names)
        row = " ".join(f"{v:>{width}.3f}" for v in values)
        lines.append(f"{short_name(layer):<10} {row}")
    lines += ["", "optimizers (each with the same step decay):"]
    lines += [f"  {n:<11} {run['optimizer']}" for n, run in runs.items()]
    return "\n".join(lines)


def write_markdown(path: Path, results: Mapping[str, Any], image: str) -> None:
    """Writes a Markdown report: the settings, the tables, the figure."""
    text = (
        f"# Layca demo: {results['task']}\n\n"
        f"{results['epochs']} epochs, step decay, seed {results['seed']}, "
        f"{results['n_train']} train / {results['n_test']} test samples, "
        f"layca_optax {results['layca_optax_version']}, "
        f"jax {results['jax_version']} ({results['backend']}).\n\n"
        f"```\n{format_report(results)}\n```\n\n"
        f"![Layer rotation curves]({image})\n"
    )
    write_text(path, text)


def write(out: Path, results: Mapping[str, Any]) -> None:
    """Writes the demo's outputs into ``out`` (created if needed), each
    atomically, ``results.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    for name, run in results["optimizers"].items():
        history(run).save_csv(out / settings.history_name(name))
    write_figure(out / settings.FIGURE_NAME, results)
    write_markdown(out / settings.REPORT_NAME, results, settings.FIGURE_NAME)
    write_json(out / settings.RESULTS_NAME, results)  # last: all done
