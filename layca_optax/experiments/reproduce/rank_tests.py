"""Rank statistics (SciPy's): Spearman's correlation, a one-sample t test,
and a within-run permutation test of per-run rank correlations.

They test whether, within trained networks, a layer's final rotation goes
with its re-initialization drop (:func:`drops`): for each run, Spearman's
correlation over its layers; over runs, the mean and standard deviation of
those correlations, Student's one-sample t against 0 (two-sided p from the
t distribution) and a permutation p-value (each run's drops shuffled over
its layers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats


PERMUTATIONS = 10_000
"""Random permutations of :func:`permutation_p`."""


def _constant(values: Sequence[float]) -> bool:
    v = np.asarray(values, float)
    return bool(np.all(v == v[0]))


def _centered_ranks(values: Sequence[float]) -> np.ndarray | None:
    """Ranks minus their mean, scaled to unit norm (None if all tie)."""
    r = stats.rankdata(values)
    r -= r.mean()
    norm = float(np.sqrt(r @ r))
    return None if norm == 0 else r / norm


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``, mean ranks for
    ties); NaN when ``x`` or ``y`` is constant or has fewer than 2 values.

    Example:
      >>> spearman([1, 2, 3, 4], [10, 30, 20, 40])
      0.8
    """
    if len(x) < 2 or _constant(x) or _constant(y):
        return math.nan
    return round(float(stats.spearmanr(x, y).statistic), 15)


def t_test(
    values: Sequence[float], popmean: float = 0.0
) -> tuple[float, float]:
    """Student's one-sample t of ``values`` against ``popmean`` and its
    two-sided p-value (``scipy.stats.ttest_1samp``); NaN for fewer than 2
    values, t infinite and p 0 when they differ from ``popmean`` without
    spread.

    Example:
      >>> t, p = t_test([0.5, 0.7, 0.6])
      >>> round(t, 3), round(p, 4)
      (10.392, 0.0091)
    """
    v = np.asarray(values, float)
    if len(v) < 2:
        return math.nan, math.nan
    diff, sd = float(v.mean()) - popmean, float(v.std(ddof=1))
    if sd == 0:
        if diff == 0:
            return math.nan, math.nan
        return math.copysign(math.inf, diff), 0.0
    result = stats.ttest_1samp(v, popmean)
    return float(result.statistic), float(result.pvalue)


def permutation_p(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    draws: int = PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value of the mean Spearman correlation of
    ``pairs`` (one ``(x, y)`` per run): each run's ``y`` is shuffled over its
    entries, independently, ``draws`` times (seeded); p is ``(1 + k) /
    (1 + draws)`` where ``k`` draws have a mean at least as far from 0.
    Runs whose correlation is undefined (a constant ``x`` or ``y``) are left
    out; NaN when none is left."""
    ranked: list[tuple[np.ndarray, np.ndarray]] = []
    for x, y in pairs:
        rx, ry = _centered_ranks(x), _centered_ranks(y)
        if rx is not None and ry is not None:
            ranked.append((rx, ry))
    if not ranked:
        return math.nan
    rng = np.random.default_rng(seed)
    observed = np.mean([rx @ ry for rx, ry in ranked])
    total = np.zeros(draws)
    for rx, ry in ranked:
        shuffled = rng.permuted(np.tile(ry, (draws, 1)), axis=1)
        total += shuffled @ rx
    permuted = total / len(ranked)
    extreme = np.abs(permuted) >= abs(observed) - 1e-12
    return float((1 + extreme.sum()) / (1 + draws))


def drops(
    run: Mapping[str, Any], layers: Sequence[str]
) -> tuple[list[float], list[float]] | None:
    """A run's layers' final rotations and re-initialization drops.

    The drop of a layer is the run's validation accuracy minus its
    validation accuracy with that layer's kernel reset to its initial value
    (the other layers trained), in points (x100).

    Returns:
      ``(rotations, drops)`` in ``layers``' order, or None when a value is
      missing or not finite (a diverged run).
    """
    base, reset = run.get("validation_accuracy"), run.get("reset_accuracy")
    rotation = run.get("final_rotation") or {}
    if base is None or not reset:
        return None
    rot = [rotation.get(layer) for layer in layers]
    acc = [reset.get(layer) for layer in layers]
    values = [base, *rot, *acc]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    rotations = [float(r) for r in rot if r is not None]
    return rotations, [100 * (base - a) for a in acc if a is not None]


def summarize(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
) -> dict[str, Any]:
    """The statistics of per-run correlations.

    Args:
      pairs: ``(rotations, drops)`` of each run (see :func:`drops`).

    Returns:
      ``runs`` (given), ``defined`` (runs with a correlation), ``layers``
      (per run), ``correlations`` (each run's, NaN where undefined),
      ``mean`` and ``sd`` of the defined ones, ``t`` and ``p_t`` (one-sample
      t against 0) and ``p_perm`` (:func:`permutation_p`).
    """
    rhos = [spearman(x, y) for x, y in pairs]
    defined = [r for r in rhos if not math.isnan(r)]
    t, p_t = t_test(defined)
    n = len(defined)
    return {
        "runs": len(pairs),
        "defined": n,
        "layers": len(pairs[0][0]) if pairs else 0,
        "correlations": rhos,
        "mean": float(np.mean(defined)) if n else math.nan,
        "sd": float(np.std(defined, ddof=1)) if n > 1 else math.nan,
        "t": t,
        "p_t": p_t,
        "p_perm": permutation_p(pairs),
    }
