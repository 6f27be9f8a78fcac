"""The reproduction's report: its figures and ``report.md``, written from
``results.json`` alone (so ``layca-optax report`` redraws them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layca_optax._io import atomic_write_text
from layca_optax.experiments import _repro_figures as figures
from layca_optax.experiments._claims import MATCH_POINTS, T_THRESHOLD, table
from layca_optax.experiments._report import write_png


REPORT_NAME = "report.md"


def write_report(results: Mapping[str, Any], out: str | Path) -> None:
    """Draws the figures and writes ``report.md`` into ``out``."""
    out = Path(out)
    names = write_figures(results, out)
    atomic_write_text(out / REPORT_NAME, markdown(results, names))


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
        "reinit": figures.reinit(reinit_studies(results)),
    }
    for key, fig in drawn.items():
        write_png(out / figures.FIGURES[key], fig, dpi=90)
    return [figures.FIGURES[k] for k in drawn]


def reinit_studies(results: Mapping[str, Any]) -> dict[str, list]:
    """``{"<model>, <configuration>": its seeds' reinit studies}``."""
    studies: dict[str, list] = {}
    for e in results["experiments"].values():
        for c in e["configs"]:
            entries = [r["reinit"] for r in c["runs"] if "reinit" in r]
            if entries:
                model = "CNN" if e["task"] == "cnn" else "MLP"
                studies[f"{model}, {c['label']}"] = entries
    return studies


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
    """The report: the verdicts, then each experiment's table and figure.

    Args:
      results: the content of ``results.json``.
      images: the figures' file names, as :func:`write_figures` returns
        them.
    """
    keys = list(figures.FIGURES)
    lines = [*_head(results), *_verdicts(results["claims"])]
    lines += _experiments(results, images)
    lines += _reinit_section(results)
    lines += ["", f"![reinit]({images[keys.index('reinit')]})", ""]
    return "\n".join(lines)


def _head(results: Mapping[str, Any]) -> list[str]:
    """The title, the command and the settings."""
    s = results["settings"]
    seeds = ", ".join(map(str, s["seeds"]))
    return [
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
    ]


def _verdicts(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    """The claims' table."""
    lines = [
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
    for c in claims:
        lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} |")
    return lines


def _experiments(
    results: Mapping[str, Any], images: Sequence[str]
) -> list[str]:
    """Each experiment's table of configurations and its figure."""
    lines = []
    rows, keys = table(results), list(figures.FIGURES)
    for name, e in results["experiments"].items():
        image = images[keys.index(name)]
        lines += [
            "",
            f"## {name}: {e['title']}",
            "",
            _table_md(rows[name]),
            "",
            f"![{name}]({image})",
        ]
    return lines


def _reinit_section(results: Mapping[str, Any]) -> list[str]:
    """The re-initialization study's tables, one per probed model."""
    lines = [
        "",
        "## Re-initialization robustness (Zhang, Bengio & Singer, 2022)",
        "",
        "Test accuracy with one layer reset to its value at a checkpoint "
        "(init, then epochs), or re-drawn from its initial distribution "
        "(`rerandom`), the other layers trained; mean over seeds. A layer is "
        "*robust* when resetting it to init costs at most 1 point.",
    ]
    for label, entries in reinit_studies(results).items():
        result = figures.mean_reinit(entries)
        lines += ["", f"### {label}", "", result.to_markdown(digits=3)]
    return lines
