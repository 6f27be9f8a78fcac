"""The paper's claims, checked on the reproduction's results.

Every statistic is over seeds: a configuration's mean and sample standard
deviation (``ddof=1``) of a final accuracy. Two configurations are
compared with Welch's t statistic ``(m1 - m2) / sqrt(s1^2/n1 + s2^2/n2)``;
with 3 seeds, ``|t| >= 2`` is taken as a real difference (a rule of thumb,
not a test at a stated level). "Best" learning rates (and weight decays)
are picked by mean accuracy on the validation split carved from the train
set (:func:`pick`, which reads nothing else); the claims' numbers are the
picked configurations' test accuracies, and on MNIST-1D also their accuracy
on a second, larger test set (``test2``). :func:`verdicts` also states each
claim as it stood when picking on test accuracy (the former protocol).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from layca_optax.experiments.common.format import number
from layca_optax.experiments.common.welch import (
    MATCH_POINTS,
    T_THRESHOLD,
    welch_t,
)
from layca_optax.experiments.reproduce.experiments import LAYCA_DEFAULT
from layca_optax.experiments.reproduce.rank_tests import spearman


SETS = ("val", "test", "test2")
"""The accuracies :func:`stats` summarizes: validation, test, test-2."""

_KEYS = {"val": "validation_accuracy", "test2": "test2_accuracy"}


def _values(runs: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """A field of every run as floats (None, or absent: NaN)."""
    return np.array([r.get(key) for r in runs], float)


def stats(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's statistics over its seeds' runs: for each set of
    :data:`SETS`, ``<set>_mean`` and ``<set>_std`` (NaN where the runs have
    none, e.g. test-2 off MNIST-1D)."""
    runs = config["runs"]
    out = {
        "label": config["label"],
        "kind": config["kind"],
        "hparams": config["hparams"],
        "n": len(runs),
    }
    for name in SETS:
        acc = _values(runs, _KEYS.get(name, f"{name}_accuracy"))
        out[f"{name}_mean"] = float(acc.mean())
        out[f"{name}_std"] = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
    out["train_mean"] = float(_values(runs, "train_accuracy").mean())
    out["rotation_mean"] = float(_values(runs, "rotation_mean").mean())
    out["rotation_min"] = float(_values(runs, "rotation_min").mean())
    return out


def table(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{experiment: [stats(config), ...]}`` of a reproduction's results."""
    return {
        name: [stats(c) for c in e["configs"]]
        for name, e in results["experiments"].items()
    }


def pick(
    configs: Sequence[Mapping[str, Any]], on: str = "val"
) -> dict[str, Any]:
    """The configuration of highest mean accuracy on ``on`` (the validation
    split unless told): only ``<on>_mean`` is read to choose. A diverged
    configuration (NaN) is never picked; ties go to the first."""

    def key(i: int) -> float:
        value = configs[i][f"{on}_mean"]
        return -math.inf if math.isnan(value) else value

    return dict(configs[max(range(len(configs)), key=key)])


def _pct(x: float) -> str:
    return f"{number(x, scale=100)}%"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a claim is checked: best configurations picked on ``select``
    (``"val"``, or ``"test"`` for the former protocol), the claim's numbers
    measured on ``on`` (``"test"`` or ``"test2"``)."""

    select: str = "val"
    on: str = "test"

    @property
    def name(self) -> str:
        """The measured set, as the evidence names it."""
        return "test-2" if self.on == "test2" else self.on

    @property
    def picked_on(self) -> str:
        """The selection set, as the evidence names it."""
        return "validation" if self.select == "val" else self.select

    def best(self, configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The configuration picked among ``configs``."""
        return pick(configs, self.select)

    def describe(self, c: Mapping[str, Any]) -> str:
        sd = number(c[f"{self.on}_std"], scale=100)
        return f"{c['label']} {_pct(c[f'{self.on}_mean'])} +- {sd}"

    def compare(
        self, a: Mapping[str, Any], b: Mapping[str, Any]
    ) -> tuple[float, float]:
        diff = a[f"{self.on}_mean"] - b[f"{self.on}_mean"]
        return 100 * diff, welch_t(a, b, self.on)


Table = Mapping[str, Sequence[Mapping[str, Any]]]
"""``{experiment: [stats(config), ...]}`` (see :func:`table`)."""


def default_layca(table: Table) -> dict[str, Any]:
    """Layca's default configuration (alpha 0, rho(0) 3^-3) of Fig. 1."""
    layca = [c for c in table["fig1"] if c["hparams"] == LAYCA_DEFAULT.hparams]
    return dict(layca[0]) if layca else pick(table["fig1"])


def check_claims(table: Table, protocol: Protocol | None = None) -> list:
    """Each claim of the paper with its verdict at this scale.

    Args:
      table: ``{experiment: [stats(config), ...]}`` (see :func:`stats`).
      protocol: where configurations are picked and measured; default
        picked on validation, measured on test.

    Returns:
      ``[{"claim", "verdict", "evidence"}]``; verdicts are ``"holds"``,
      ``"does not hold"`` or ``"inconclusive"``.
    """
    p = protocol or Protocol()
    default = default_layca(table)
    return [
        _rotation_claim(table, p),
        _sgd_claim(table, default, p),
        _weight_decay_claim(table, default, p),
        *(
            _adaptive_claim(table, default, method, p)
            for method in adaptive_methods(table["fig6"])
        ),
        _mlp_claim(table, p),
    ]


def verdicts(table: Table) -> list[dict[str, Any]]:
    """The claims as ``results.json`` records them: picked on validation
    and measured on test (``verdict``, ``evidence``), measured on test-2
    (``verdict_test2``, ``evidence_test2``; None when no run has test-2),
    and the verdict when picking on test (``verdict_picked_on_test``)."""
    main = check_claims(table)
    rows = [c for configs in table.values() for c in configs]
    has_test2 = any(not math.isnan(c["test2_mean"]) for c in rows)
    second = check_claims(table, Protocol(on="test2")) if has_test2 else None
    old = check_claims(table, Protocol(select="test"))
    out = []
    for i, claim in enumerate(main):
        out.append(
            {
                **claim,
                "verdict_test2": second[i]["verdict"] if second else None,
                "evidence_test2": second[i]["evidence"] if second else None,
                "verdict_picked_on_test": old[i]["verdict"],
            }
        )
    return out


def _claim(claim: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "evidence": evidence}


def _rotation_claim(table: Table, p: Protocol) -> dict[str, str]:
    """1. Rotation and generalization, over every SGD-family configuration."""
    family = [*table["fig1"], *table["fig2"], *table["fig3"]]
    acc = [c[f"{p.on}_mean"] for c in family]
    rho_min = spearman([c["rotation_min"] for c in family], acc)
    rho_mean = spearman([c["rotation_mean"] for c in family], acc)
    best = p.best(family)
    verdict = "holds" if rho_min >= 0.5 else "does not hold"
    if math.isnan(rho_min):
        verdict = "inconclusive"
    return _claim(
        "Larger (and more uniform) layer rotation goes with better test "
        "accuracy (Figs. 1-3)",
        verdict,
        f"Spearman rank correlation over the {len(family)} SGD-family "
        f"configurations (Layca grid, SGD, SGD + weight decay) between "
        f"{p.name} accuracy and the final rotation of the *least* rotated "
        f"layer: {rho_min:.2f} (of the mean rotation: {rho_mean:.2f}); "
        f"holds when >= 0.5. Picked on {p.picked_on}: {p.describe(best)}, "
        f"least-rotated layer {number(best['rotation_min'])}.",
    )


def _sgd_claim(
    table: Table, default: Mapping[str, Any], p: Protocol
) -> dict[str, str]:
    """2. Layca's default against tuned SGD without weight decay."""
    sgd = p.best(table["fig2"])
    diff, t = p.compare(default, sgd)
    return _claim(
        "Layca (alpha=0, rho(0)=3^-3, untuned) beats SGD without weight "
        "decay at its best learning rate (Fig. 2)",
        _direction(t, positive="holds", negative="does not hold"),
        f"{p.name} accuracy: Layca {p.describe(default)}; SGD picked on "
        f"{p.picked_on} {p.describe(sgd)}; difference {diff:+.2f} points, "
        f"Welch t {t:+.1f}.",
    )


def _weight_decay_claim(
    table: Table, default: Mapping[str, Any], p: Protocol
) -> dict[str, str]:
    """3. SGD + weight decay matches Layca."""
    wd = p.best(table["fig3"])
    diff, t = p.compare(wd, default)
    matches = abs(diff) <= MATCH_POINTS or abs(t) < T_THRESHOLD
    return _claim(
        "SGD + weight decay (tuned) reaches Layca's test accuracy (Fig. 3)",
        "holds" if matches else "does not hold",
        f"{p.name} accuracy: SGD + weight decay picked on {p.picked_on} "
        f"{p.describe(wd)}; Layca {p.describe(default)}; difference "
        f"{diff:+.2f} points, Welch t {t:+.1f} (match: within "
        f"{MATCH_POINTS} points or |t| < {T_THRESHOLD:g}). Its "
        f"least-rotated layer {number(wd['rotation_min'])} vs Layca's "
        f"{number(default['rotation_min'])}.",
    )


def _adaptive_claim(
    table: Table, default: Mapping[str, Any], method: str, p: Protocol
) -> dict[str, str]:
    """4. Layca on an adaptive method closes its generalization gap."""
    plain = p.best([c for c in table["fig6"] if c["kind"] == method])
    ours = p.best([c for c in table["fig6"] if c["kind"] == f"{method}-layca"])
    gap_plain, t_gap = p.compare(default, plain)
    gap_ours, _ = p.compare(default, ours)
    gain, t_gain = p.compare(ours, plain)
    if t_gap < T_THRESHOLD:
        verdict = "inconclusive"  # no gap to close at this scale
    else:
        verdict = "holds" if t_gain >= T_THRESHOLD else "does not hold"
    return _claim(
        f"Layca on top of {method} closes its gap to SGD + Layca (Fig. 6)",
        verdict,
        f"{p.name} accuracy, picked on {p.picked_on}: {method} "
        f"{p.describe(plain)}; {method} + Layca {p.describe(ours)}; gap to "
        f"SGD + Layca {gap_plain:+.2f} points (Welch t {t_gap:+.1f}) -> "
        f"{gap_ours:+.2f} with Layca (gain {gain:+.2f}, t {t_gain:+.1f}); "
        "inconclusive when the plain method has no gap (t < 2).",
    )


def _mlp_claim(table: Table, p: Protocol) -> dict[str, str]:
    """5. Section 6: more rotation, more digit-like features, better test."""
    mlp = sorted(table["fig8"], key=lambda c: -c["hparams"]["learning_rate"])
    rates = [c["hparams"]["learning_rate"] for c in mlp]
    rho = spearman(rates, [c[f"{p.on}_mean"] for c in mlp])
    verdict = "does not hold" if rho < -0.5 else "inconclusive"
    claim = (
        "Section 6 MLP: larger Layca learning rates (more rotation) give "
        "better test accuracy (Fig. 8)"
    )
    if p.on == "test2":
        return _claim(claim, "n/a", "no second test set for the MLP.")
    return _claim(
        claim,
        "holds" if rho > 0.5 else verdict,
        f"{p.name} accuracy from the largest rate to the smallest: "
        + ", ".join(p.describe(c) for c in mlp)
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
