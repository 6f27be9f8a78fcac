"""Rank statistics, pure NumPy: Spearman's correlation, a one-sample t test
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


PERMUTATIONS = 10_000
"""Random permutations of :func:`permutation_p`."""


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (``scipy.stats.rankdata``).

    Example:
      >>> rankdata([3.0, 1.0, 3.0, 2.0]).tolist()
      [3.5, 1.0, 3.5, 2.0]
    """
    v = np.asarray(values, float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1, dtype=float)
    for value in np.unique(v[np.isfinite(v)]):
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def _centered_ranks(values: Sequence[float]) -> np.ndarray | None:
    """Ranks minus their mean, scaled to unit norm (None if all tie)."""
    r = rankdata(values)
    r -= r.mean()
    norm = float(np.sqrt(r @ r))
    return None if norm == 0 else r / norm


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (mean ranks for ties); NaN when ``x`` or
    ``y`` is constant or fewer than 2 values.

    Example:
      >>> spearman([1, 2, 3, 4], [10, 30, 20, 40])
      0.8
    """
    if len(x) < 2:
        return math.nan
    rx, ry = _centered_ranks(x), _centered_ranks(y)
    if rx is None or ry is None:
        return math.nan
    return round(float(rx @ ry), 15)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


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
    n = len(v)
    if n < 2:
        return math.nan, math.nan
    diff, sd = float(v.mean()) - popmean, float(v.std(ddof=1))
    if sd == 0:
        if diff == 0:
            return math.nan, math.nan
        return math.copysign(math.inf, diff), 0.0
    t = diff / (sd / math.sqrt(n))
    df = n - 1
    return t, betainc(df / 2, 0.5, df / (df + t * t))


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
