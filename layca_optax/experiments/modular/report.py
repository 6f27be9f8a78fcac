"""The modular-arithmetic study's report: the Markdown section (the
setup, the table of every configuration, the verdicts, the final rotation
per layer and the figures' links) and the writing of the figures,
``modular.md`` and ``modular.json``. The statistics and verdicts are in
``stats``, the figures in ``figures``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.files import (
    write_json,
    write_png,
    write_text,
)
from layca_optax.experiments.common.format import number
from layca_optax.experiments.common.welch import T_THRESHOLD
from layca_optax.experiments.modular.figures import figures
from layca_optax.experiments.modular.settings import (
    FIGURE_NAMES,
    REPORT_NAME,
    RESULTS_NAME,
)
from layca_optax.experiments.modular.stats import NAMES, hparams_text


def _steps_cell(steps: Mapping[str, Any], n: int) -> str:
    if not steps["reached"]:
        return f"never (0/{n})"
    return (
        f"{number(steps['mean'], '.0f')} +- {number(steps['std'], '.0f')} "
        f"({steps['reached']}/{n})"
    )


def _row(s: Mapping[str, Any], picked: bool) -> str:
    rot = [v for v in s["final_rotation"].values() if v is not None]
    mark = " **(picked)**" if picked else ""
    return (
        f"| {NAMES.get(s['family'], s['family'])} | {hparams_text(s)}{mark} | "
        f"{number(s['val_mean'], scale=100)} | "
        f"{number(s['test_mean'], scale=100)} +- "
        f"{number(s['test_std'], scale=100)} | "
        f"{_steps_cell(s['steps_test'], s['n'])} | "
        f"{number(s['train_mean'], scale=100)} | "
        f"{number(min(rot) if rot else None, '.2f')} - "
        f"{number(max(rot) if rot else None, '.2f')} |"
    )


def _table(block: Mapping[str, Any]) -> list[str]:
    lines = [
        "| optimizer | hyperparameters | val. acc. % | test acc. % (mean +- "
        "sd) | steps to 99% test (seeds) | train acc. % | final rotation "
        "(min - max over layers) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fam in block["families"].values():
        for s in fam["grid"]:
            lines.append(_row(s, s["label"] == fam["best"]["label"]))
    return lines


def _setup_lines(s: Mapping[str, Any]) -> list[str]:
    m = s["model"]
    seeds = ", ".join(map(str, s["seeds"]))
    return [
        f"a + b mod {s['p']}: the {s['p'] ** 2} pairs split by a seeded "
        f"permutation (data seed {s['data_seed']}) into {s['n_train']} train, "
        f"{s['n_val']} validation (held out from the training fraction "
        f"{s['train_fraction']:g}) and {s['n_test']} test pairs. A "
        f"{m['depth']}-block transformer (width {m['width']}, {m['heads']} "
        f"heads, MLP {m['mlp']}, no LayerNorm, no biases), inputs "
        f"`[a, b, =]`, logits at `=`. Full-batch, {s['steps']} steps for "
        f"every optimizer, learning rate x{s['decay_factor']:g} at "
        f"{', '.join(f'{a:g}' for a in s['decay_at'])} of the run; "
        f"seeds {seeds} (initialization); evaluation every "
        f"{s['eval_every']} steps"
        + (" (**quick**: a smoke test)" if s["quick"] else "")
        + ".",
        "",
        "Every weight matrix is a layer for Layca and Hyperball (token and "
        "position embeddings, query/key/value/output, MLP in/out, "
        "unembedding); the model has no bias or LayerNorm scale, so nothing "
        "is left out. AdamW decays every matrix. Adam's b2 is "
        f"{s['adam_b2']:g} in AdamW, Adam + Layca and AdamH alike. Each "
        "family's configuration is picked on validation accuracy (then "
        "seeds and steps to 99% validation accuracy), never on the test "
        "set. Steps to 99% are the first evaluation at or above 99% test "
        "accuracy, averaged over the seeds that reached it.",
    ]


def _tally(claims: Sequence[Mapping[str, str]]) -> list[str]:
    """One line per verdict: which claims got it."""
    lines = []
    for verdict in ("holds", "does not hold", "inconclusive"):
        mine = [c["claim"] for c in claims if c["verdict"] == verdict]
        if mine:
            lines.append(f"- **{verdict}**: " + "; ".join(mine) + ".")
    return lines


def _rotation_table(block: Mapping[str, Any]) -> list[str]:
    """Each layer's final rotation for each family's picked configuration."""
    fams = block["families"]
    head = " | ".join(NAMES.get(f, f) for f in fams)
    lines = [
        "",
        "Final rotation (cosine distance to init) of each layer, picked "
        "configurations, mean over seeds:",
        "",
        f"| layer | {head} |",
        "| --- |" + " --- |" * len(fams),
    ]
    for layer in block["setup"]["layers"]:
        cells = [
            number(f["best"]["final_rotation"].get(layer), ".2f")
            for f in fams.values()
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def markdown_section(
    block: Mapping[str, Any], images: Mapping[str, str]
) -> list[str]:
    """The ``## Modular arithmetic with a transformer`` section, as lines:
    the setup, the table of every configuration, the verdicts, the
    figures (``images``: each key of :func:`figures` to its path)."""
    lines = ["## Modular arithmetic with a transformer", ""]
    lines += _setup_lines(block["setup"])
    lines += ["", *_table(block), "", "### Verdicts", ""]
    lines += [
        f"Welch's t over seeds; |t| >= {T_THRESHOLD:g} counts as a difference.",
        "",
        "| claim | verdict | evidence |",
        "| --- | --- | --- |",
    ]
    for c in block["claims"]:
        lines.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} |")
    lines += ["", *_tally(block["claims"]), *_rotation_table(block)]
    for key, path in images.items():
        lines += ["", f"![{key}]({path})"]
    return [*lines, ""]


def write_outputs(results: Mapping[str, Any], out: Path) -> None:
    """Writes the figures, ``modular.md`` and ``modular.json`` (last: its
    presence means the rest is complete) into ``out``, atomically."""
    block = results["results"]
    drawn = figures(block)
    images = {k: FIGURE_NAMES[k] for k in drawn}
    head = [
        "# Modular arithmetic: rotation control against weight decay",
        "",
        f"Command: `{results.get('command') or 'layca-optax modular'}` "
        f"({results['jobs']} job(s), {results['wall_seconds']:.0f} s wall; "
        f"layca_optax {block['setup']['layca_optax_version']}, jax "
        f"{block['setup']['jax_version']}, {block['setup']['backend']}).",
        "",
    ]
    text = "\n".join([*head, *markdown_section(block, images)])
    out.mkdir(parents=True, exist_ok=True)
    for key, fig in drawn.items():
        write_png(out / FIGURE_NAMES[key], fig, dpi=100)
    write_text(out / REPORT_NAME, text)
    write_json(out / RESULTS_NAME, results)
