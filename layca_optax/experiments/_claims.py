"""The paper's claims, checked on the reproduction's results.

Every statistic is over seeds: a configuration's mean and sample standard
deviation (``ddof=1``) of the final test accuracy. Two configurations are
compared with Welch's t statistic ``(m1 - m2) / sqrt(s1^2/n1 + s2^2/n2)``;
with 3 seeds, ``|t| >= 2`` is taken as a real difference (a rule of thumb,
not a test at a stated level). "Best" learning rates are chosen by mean
test accuracy (no validation split at this scale): that favours the tuned
baselines, so a win for Layca's fixed default is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from layca_optax.experiments._experiments import LAYCA_DEFAULT
from layca_optax.experiments._format import number


T_THRESHOLD = 2.0
"""``|t|`` at and above which two configurations are said to differ."""

MATCH_POINTS = 0.5
"""Two test accuracies within this many points (and ``|t| < 2``) match."""


def stats(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's statistics over its seeds' runs."""
    runs = config["runs"]
    test = np.array([r["test_accuracy"] for r in runs], float)
    train = np.array([r["train_accuracy"] for r in runs], float)
    rot_mean = np.array([r["rotation_mean"] for r in runs], float)
    rot_min = np.array([r["rotation_min"] for r in runs], float)
    sd = float(test.std(ddof=1)) if len(test) > 1 else 0.0
    return {
        "label": config["label"],
        "kind": config["kind"],
        "hparams": config["hparams"],
        "n": len(test),
        "test_mean": float(test.mean()),
        "test_std": sd,
        "train_mean": float(train.mean()),
        "rotation_mean": float(rot_mean.mean()),
        "rotation_min": float(rot_min.mean()),
    }


def table(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{experiment: [stats(config), ...]}`` of a reproduction's results."""
    return {
        name: [stats(c) for c in e["configs"]]
        for name, e in results["experiments"].items()
    }


def welch_t(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Welch's t of ``a``'s mean test accuracy minus ``b``'s."""
    diff = a["test_mean"] - b["test_mean"]
    se = math.sqrt(a["test_std"] ** 2 / a["n"] + b["test_std"] ** 2 / b["n"])
    if se == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        v = np.asarray(values, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # ties share their mean rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _best(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The configuration of highest mean test accuracy (a diverged one,
    NaN, is never the best)."""

    def key(c: Mapping[str, Any]) -> float:
        return -math.inf if math.isnan(c["test_mean"]) else c["test_mean"]

    return dict(max(configs, key=key))


def _pct(x: float) -> str:
    return f"{number(x, scale=100)}%"


def _describe(c: Mapping[str, Any]) -> str:
    sd = number(c["test_std"], scale=100)
    return f"{c['label']} {_pct(c['test_mean'])} +- {sd}"


def _compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float]:
    return 100 * (a["test_mean"] - b["test_mean"]), welch_t(a, b)


Table = Mapping[str, Sequence[Mapping[str, Any]]]
"""``{experiment: [stats(config), ...]}`` (see :func:`table`)."""


def check_claims(table: Table) -> list:
    """Each claim of the paper with its verdict at this scale.

    Args:
      table: ``{experiment: [stats(config), ...]}`` (see :func:`stats`).

    Returns:
      ``[{"claim", "verdict", "evidence"}]``; verdicts are ``"holds"``,
      ``"does not hold"`` or ``"inconclusive"``.
    """
    layca = [c for c in table["fig1"] if c["hparams"] == LAYCA_DEFAULT.hparams]
    default = dict(layca[0]) if layca else _best(table["fig1"])
    return [
        _rotation_claim(table),
        _sgd_claim(table, default),
        _weight_decay_claim(table, default),
        *(
            _adaptive_claim(table, default, method)
            for method in adaptive_methods(table["fig6"])
        ),
        _mlp_claim(table),
    ]


def _claim(claim: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "evidence": evidence}


def _rotation_claim(table: Table) -> dict[str, str]:
    """1. Rotation and generalization, over every SGD-family configuration."""
    family = [*table["fig1"], *table["fig2"], *table["fig3"]]
    acc = [c["test_mean"] for c in family]
    rho_min = spearman([c["rotation_min"] for c in family], acc)
    rho_mean = spearman([c["rotation_mean"] for c in family], acc)
    best = _best(family)
    verdict = "holds" if rho_min >= 0.5 else "does not hold"
    if math.isnan(rho_min):
        verdict = "inconclusive"
    return _claim(
        "Larger (and more uniform) layer rotation goes with better test "
        "accuracy (Figs. 1-3)",
        verdict,
        f"Spearman rank correlation over the {len(family)} SGD-family "
        f"configurations (Layca grid, SGD, SGD + weight decay) between test "
        f"accuracy and the final rotation of the *least* rotated layer: "
        f"{rho_min:.2f} (of the mean rotation: {rho_mean:.2f}); holds when "
        f">= 0.5. Best: {_describe(best)}, least-rotated layer "
        f"{number(best['rotation_min'])}.",
    )


def _sgd_claim(table: Table, default: Mapping[str, Any]) -> dict[str, str]:
    """2. Layca's default against tuned SGD without weight decay."""
    sgd = _best(table["fig2"])
    diff, t = _compare(default, sgd)
    return _claim(
        "Layca (alpha=0, rho(0)=3^-3, untuned) beats SGD without weight "
        "decay at its best learning rate (Fig. 2)",
        _direction(t, positive="holds", negative="does not hold"),
        f"Layca {_describe(default)}; best SGD {_describe(sgd)}; difference "
        f"{diff:+.2f} points, Welch t {t:+.1f}.",
    )


def _weight_decay_claim(
    table: Table, default: Mapping[str, Any]
) -> dict[str, str]:
    """3. SGD + weight decay matches Layca."""
    wd = _best(table["fig3"])
    diff, t = _compare(wd, default)
    matches = abs(diff) <= MATCH_POINTS or abs(t) < T_THRESHOLD
    return _claim(
        "SGD + weight decay (tuned) reaches Layca's test accuracy (Fig. 3)",
        "holds" if matches else "does not hold",
        f"best SGD + weight decay {_describe(wd)}; Layca "
        f"{_describe(default)}; difference {diff:+.2f} points, Welch t "
        f"{t:+.1f} (match: within {MATCH_POINTS} points or |t| < "
        f"{T_THRESHOLD:g}). Its least-rotated layer "
        f"{number(wd['rotation_min'])} vs Layca's "
        f"{number(default['rotation_min'])}.",
    )


def _adaptive_claim(
    table: Table, default: Mapping[str, Any], method: str
) -> dict[str, str]:
    """4. Layca on an adaptive method closes its generalization gap."""
    plain = _best([c for c in table["fig6"] if c["kind"] == method])
    ours = _best([c for c in table["fig6"] if c["kind"] == f"{method}-layca"])
    gap_plain, t_gap = _compare(default, plain)
    gap_ours, _ = _compare(default, ours)
    gain, t_gain = _compare(ours, plain)
    if t_gap < T_THRESHOLD:
        verdict = "inconclusive"  # no gap to close at this scale
    else:
        verdict = "holds" if t_gain >= T_THRESHOLD else "does not hold"
    return _claim(
        f"Layca on top of {method} closes its gap to SGD + Layca (Fig. 6)",
        verdict,
        f"best {method} {_describe(plain)}; best {method} + Layca "
        f"{_describe(ours)}; gap to SGD + Layca {gap_plain:+.2f} points "
        f"(Welch t {t_gap:+.1f}) -> {gap_ours:+.2f} with Layca (gain "
        f"{gain:+.2f}, t {t_gain:+.1f}); inconclusive when the plain method "
        "has no gap (t < 2).",
    )


def _mlp_claim(table: Table) -> dict[str, str]:
    """5. Section 6: more rotation, more digit-like features, better test."""
    mlp = sorted(table["fig8"], key=lambda c: -c["hparams"]["learning_rate"])
    rates = [c["hparams"]["learning_rate"] for c in mlp]
    rho = spearman(rates, [c["test_mean"] for c in mlp])
    verdict = "does not hold" if rho < -0.5 else "inconclusive"
    return _claim(
        "Section 6 MLP: larger Layca learning rates (more rotation) give "
        "better test accuracy (Fig. 8)",
        "holds" if rho > 0.5 else verdict,
        "test accuracy from the largest rate to the smallest: "
        + ", ".join(_describe(c) for c in mlp)
        + f"; Spearman(rate, accuracy) {rho:.2f}; mean final rotation "
        + ", ".join(number(c["rotation_mean"]) for c in mlp)
        + ".",
    )


def _direction(t: float, *, positive: str, negative: str) -> str:
    if t >= T_THRESHOLD:
        return positive
    if t <= -T_THRESHOLD:
        return negative
    return "inconclusive"


def adaptive_methods(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The adaptive methods of Fig. 6's configurations, in order."""
    kinds = [c["kind"] for c in configs if not c["kind"].endswith("-layca")]
    return list(dict.fromkeys(kinds))
