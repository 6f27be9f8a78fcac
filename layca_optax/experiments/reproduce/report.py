"""The reproduction's report: its figures and ``report.md``, written from
``results.json`` alone (so ``layca-optax report`` redraws them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.files import write_png, write_text
from layca_optax.experiments.common.format import number
from layca_optax.experiments.common.welch import MATCH_POINTS, T_THRESHOLD
from layca_optax.experiments.modular import (
    figures as modular_figures,
    report as modular_report,
    settings as modular_settings,
)
from layca_optax.experiments.reproduce import figures, robustness
from layca_optax.experiments.reproduce.stats import (
    adaptive_methods,
    pick,
    table,
)


REPORT_NAME = "report.md"


def write_report(results: Mapping[str, Any], out: str | Path) -> None:
    """Draws the figures and writes them and ``report.md`` into ``out``
    (everything drawn before the first file is written)."""
    out = Path(out)
    drawn = draw_figures(results)
    text = markdown(results, [figures.FIGURES[k] for k in drawn])
    study = (
        modular_figures.figures(results["modular"])
        if "modular" in results
        else {}
    )
    _write_pngs(drawn, out)
    for key, fig in study.items():
        write_png(out / modular_settings.FIGURE_NAMES[key], fig, dpi=90)
    write_text(out / REPORT_NAME, text)


def _layers(results: Mapping[str, Any], experiment: str) -> list[str]:
    task = results["experiments"][experiment]["task"]
    return results["settings"][task]["layers"]


def write_figures(results: Mapping[str, Any], out: Path) -> list[str]:
    """Draws every figure into ``out`` (atomically); returns their names."""
    names = _write_pngs(draw_figures(results), out)
    if "modular" in results:
        for key, fig in modular_figures.figures(results["modular"]).items():
            write_png(out / modular_settings.FIGURE_NAMES[key], fig, dpi=90)
            names.append(modular_settings.FIGURE_NAMES[key])
    return names


def _write_pngs(drawn: Mapping[str, Any], out: Path) -> list[str]:
    """Writes the figures :func:`draw_figures` drew; returns their names."""
    for key, fig in drawn.items():
        write_png(out / figures.FIGURES[key], fig, dpi=90)
    return [figures.FIGURES[k] for k in drawn]


def draw_figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure, ``{key of FIGURES: matplotlib Figure}``."""
    exps = results["experiments"]
    return {
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
        "rotation_reinit": figures.rotation_reinit(
            {k: v[1] for k, v in robustness.picked_runs(results).items()}
        ),
    }


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


def _acc(s: Mapping[str, Any], name: str) -> str:
    mean, sd = s[f"{name}_mean"], s[f"{name}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{number(mean, scale=100)} +- {number(sd, scale=100)}"


def _row(s: Mapping[str, Any], picked: bool) -> str:
    label = f"**{s['label']}** (picked)" if picked else s["label"]
    return (
        f"| {label} | {_acc(s, 'val')} | {_acc(s, 'test')} | "
        f"{_acc(s, 'test2')} | {number(s['train_mean'], scale=100)} | "
        f"{number(s['rotation_mean'], '.3f')} | "
        f"{number(s['rotation_min'], '.3f')} |"
    )


def _picked(name: str, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """The labels picked on validation: one per optimizer kind (fig. 6),
    else one for the experiment."""
    if name != "fig6":
        return {pick(rows)["label"]}
    kinds = adaptive_methods(rows)
    kinds += [f"{k}-layca" for k in kinds]
    return {pick([r for r in rows if r["kind"] == k])["label"] for k in kinds}


def _table_md(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "| configuration | validation acc. % | test acc. % | test-2 acc. % "
        "| train acc. % | rotation, mean of layers | rotation, least "
        "rotated layer |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    picked = _picked(name, rows)
    return "\n".join([head, *(_row(r, r["label"] in picked) for r in rows)])


def markdown(results: Mapping[str, Any], images: Sequence[str]) -> str:
    """The report: the verdicts, then each experiment's table and figure,
    and the modular-arithmetic study's section if ``results`` holds one.

    Args:
      results: the content of ``results.json``.
      images: the figures' file names, as :func:`write_figures` returns
        them.
    """
    keys = list(figures.FIGURES)
    lines = [*_head(results), *_verdicts(results["claims"])]
    lines += _experiments(results, images)
    lines += robustness.section(results, images[keys.index("rotation_reinit")])
    lines += _reinit_section(results)
    lines += ["", f"![reinit]({images[keys.index('reinit')]})", ""]
    if "modular" in results:
        names = modular_settings.FIGURE_NAMES
        lines += [
            *modular_report.markdown_section(results["modular"], names),
            "",
        ]
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
        "value at the end of training. Accuracies after the last epoch.",
        f"- Validation: a stratified split of each train set (seed "
        f"{s['validation_seed']}, the same for every seed and "
        "configuration), held out of training; every best learning rate "
        "and weight decay is picked on it. Test-2: "
        + (
            f"{s['test2']['n']:,} new MNIST-1D sequences (data seed "
            f"{s['test2']['data_seed']}), CNN only."
            if s["test2"]
            else "n/a (MNIST-1D only)."
        ),
    ]


def _verdict(c: Mapping[str, Any]) -> str:
    """The verdict, with the former protocol's next to it if it differs."""
    text = f"**{c['verdict']}**"
    if c["verdict_picked_on_test"] != c["verdict"]:
        text += f" (picked on test: {c['verdict_picked_on_test']})"
    return text


def _verdicts(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    """The claims' table, the verdicts that picking on validation changed,
    and the test-2 evidence."""
    changed = [
        str(i + 1)
        for i, c in enumerate(claims)
        if c["verdict_picked_on_test"] != c["verdict"]
    ]
    lines = [
        "",
        "## Verdicts",
        "",
        f"Welch's t over seeds; |t| >= {T_THRESHOLD:g} counts as a "
        f"difference, a match is within {MATCH_POINTS} points or |t| < "
        f"{T_THRESHOLD:g}. Best configurations are picked on validation "
        "accuracy; the numbers are their test (and test-2) accuracies. "
        "Verdicts that picking on test accuracy instead (the former "
        "protocol, same runs) would change: "
        + (f"claims {', '.join(changed)}." if changed else "none."),
        "",
        "| # | claim | verdict (test) | verdict (test-2) | evidence (test) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, c in enumerate(claims, 1):
        second = c["verdict_test2"] or "n/a"
        lines.append(
            f"| {i} | {c['claim']} | {_verdict(c)} | {second} | "
            f"{c['evidence']} |"
        )
    second = [
        f"- claim {i}: {c['evidence_test2']}"
        for i, c in enumerate(claims, 1)
        if c["evidence_test2"]
    ]
    return [*lines, "", "Test-2 evidence:", "", *second] if second else lines


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
            _table_md(name, rows[name]),
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
        "Validation accuracy with one layer reset to its value at a checkpoint "
        "(init, then epochs), or re-drawn from its initial distribution "
        "(`rerandom`), the other layers trained; mean over seeds. A layer is "
        "*robust* when resetting it to init costs at most 1 point.",
    ]
    for label, entries in reinit_studies(results).items():
        result = figures.mean_reinit(entries)
        lines += ["", f"### {label}", "", result.to_markdown(digits=3)]
    return lines
