"""Layer rotation against re-initialization robustness, from ``results.json``.

For each optimizer family (:data:`FAMILIES`), the configuration picked on
validation accuracy; for each of its runs (seeds), Spearman's correlation
over the CNN's layers between a layer's final rotation and its
re-initialization drop (validation accuracy minus validation accuracy with
that layer reset to its initial value, see
:func:`~layca_optax.experiments.reproduce.rank_tests.drops`). Per family and
pooled over families: the statistics of
:func:`~layca_optax.experiments.reproduce.rank_tests.summarize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from layca_optax.experiments.common.format import number
from layca_optax.experiments.reproduce.rank_tests import (
    PERMUTATIONS,
    drops,
    summarize,
)
from layca_optax.experiments.reproduce.stats import pick, stats


FAMILIES = (
    ("SGD", "fig2", "sgd"),
    ("SGD + weight decay", "fig3", "sgd-wd"),
    ("Adam", "fig6", "adam"),
    ("Layca", "fig1", "layca"),
    ("Adam + Layca", "fig6", "adam-layca"),
)
"""``(name, experiment, optimizer kind)`` of each family studied."""

LEVEL = 0.05
"""The permutation p-value below which the pooled correlation is real."""

Pairs = list[tuple[list[float], list[float]]]


def picked_runs(
    results: Mapping[str, Any], select: str = "val"
) -> dict[str, tuple[str, Pairs]]:
    """``{family: (picked configuration's label, its runs' (rotations,
    drops))}``, picking on ``select`` (``"val"``, or ``"test"``); families
    without configurations, or whose runs have no drops, are left out."""
    layers = results["settings"]["cnn"]["layers"]
    out = {}
    for name, experiment, kind in FAMILIES:
        configs = [
            c
            for c in results["experiments"][experiment]["configs"]
            if c["kind"] == kind
        ]
        if not configs:
            continue
        best = pick(
            [{**stats(c), "i": i} for i, c in enumerate(configs)], select
        )
        pairs = [drops(r, layers) for r in configs[best["i"]]["runs"]]
        found = [p for p in pairs if p is not None]
        if found:
            out[name] = (best["label"], found)
    return out


def analyze(
    results: Mapping[str, Any], select: str = "val"
) -> dict[str, dict[str, Any]]:
    """Each family's statistics (with ``"label"``, its picked
    configuration) and, last, ``"pooled"`` over every family's runs."""
    found = picked_runs(results, select)
    out = {
        name: {"label": label, **summarize(pairs)}
        for name, (label, pairs) in found.items()
    }
    out["pooled"] = {
        "label": f"{len(found)} optimizers",
        **summarize([p for _, pairs in found.values() for p in pairs]),
    }
    return out


def verdict(pooled: Mapping[str, Any]) -> str:
    """``holds`` when the pooled mean correlation is positive with a
    permutation p below :data:`LEVEL`, ``does not hold`` when negative so,
    else ``inconclusive``."""
    p, mean = pooled["p_perm"], pooled["mean"]
    if math.isnan(p) or p >= LEVEL:
        return "inconclusive"
    return "holds" if mean > 0 else "does not hold"


def _stat(s: Mapping[str, Any]) -> str:
    return (
        f"{number(s['mean'], '+.2f')} +- {number(s['sd'])} over "
        f"{s['defined']}/{s['runs']} runs of {s['layers']} layers, t "
        f"{number(s['t'], '+.2f')} (p {number(s['p_t'], '.3f')}), "
        f"permutation p {number(s['p_perm'], '.3f')}"
    )


def claim(results: Mapping[str, Any]) -> dict[str, Any]:
    """The claim's record for ``results.json`` (as :func:`~layca_optax.
    experiments.reproduce.stats.verdicts`' records; no test-2: the drops are
    measured on the validation split)."""
    new, old = analyze(results), analyze(results, "test")
    families = [k for k in new if k != "pooled"]
    evidence = (
        "Spearman correlation, per run, between a layer's final rotation "
        "and its drop in validation accuracy when reset to its initial "
        "value; mean +- sd over runs. Pooled (configurations picked on "
        f"validation): {_stat(new['pooled'])}. Per optimizer: "
        + "; ".join(
            f"{k} ({new[k]['label']}) {_stat(new[k])}" for k in families
        )
        + "."
    )
    return {
        "claim": "The least-rotated layers are the most robust to "
        "re-initialization (rotation and re-initialization drop rank "
        "together within a network; Zhang et al.)",
        "verdict": verdict(new["pooled"]),
        "evidence": evidence,
        "verdict_test2": None,
        "evidence_test2": None,
        "verdict_picked_on_test": verdict(old["pooled"]),
    }


def _row(name: str, s: Mapping[str, Any]) -> str:
    return (
        f"| {name} | {s['label']} | {s['defined']}/{s['runs']} | "
        f"{s['layers']} | {number(s['mean'], '+.2f')} | {number(s['sd'])} | "
        f"{number(s['t'], '+.2f')} | {number(s['p_t'], '.3f')} | "
        f"{number(s['p_perm'], '.3f')} |"
    )


def _answer(pooled: Mapping[str, Any]) -> str:
    found = verdict(pooled)
    if found == "holds":
        return "**Yes**: within a network, the less a layer rotated, the "
    if found == "does not hold":
        return "**No, the opposite**: the layers that rotated *more* cost "
    return "**Not detectably at this scale**: "


def section(results: Mapping[str, Any], image: str) -> list[str]:
    """The report's section: the definition, the table, the answer."""
    found = analyze(results)
    pooled = found["pooled"]
    answer = _answer(pooled)
    if verdict(pooled) == "holds":
        answer += "less its reset costs (pooled permutation p < 0.05)."
    elif verdict(pooled) == "does not hold":
        answer += "less when reset (pooled permutation p < 0.05)."
    else:
        answer += (
            "the pooled correlation is not distinguishable from 0 "
            f"(permutation p >= {LEVEL})."
        )
    lines = [
        "",
        "## Layer rotation and re-initialization robustness",
        "",
        "For each run (seed) of each optimizer's configuration picked on "
        "validation: a layer's *drop* is the run's validation accuracy "
        "minus its validation accuracy with that layer's kernel reset to "
        "its initial value (the other layers trained; the `init` column of "
        "Zhang et al.'s study), in points. rho is Spearman's correlation, "
        "over the CNN's layers, of final rotation and drop; its mean and sd "
        "are over runs; t is the one-sample t of the runs' rho against 0; "
        "the permutation p shuffles each run's drops over its layers "
        f"({PERMUTATIONS:,} draws). Runs whose drops all tie have no rho.",
        "",
        "| optimizer | picked configuration | runs with rho | layers | "
        "mean rho | sd | t | p (t) | p (permutation) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(_row(k, v) for k, v in found.items() if k != "pooled"),
        _row("pooled", pooled),
        "",
        f"Are the least-rotated layers the robust ones? {answer}",
        "",
        f"![rotation vs re-initialization drop]({image})",
    ]
    return lines
