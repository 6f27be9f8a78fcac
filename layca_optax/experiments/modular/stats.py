"""The modular-arithmetic study's statistics and verdicts: each
configuration's mean and spread over seeds (final accuracies, steps to 99%,
final rotation per layer), the configuration of each family picked on
validation only, the mean curves of that one, the results block
(:func:`summarize`) and the claims against tuned AdamW with their verdicts
(Welch's t over seeds). The figures are in ``figures`` and the Markdown
in ``report``."""

from __future__ import annotations

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
from layca_optax.experiments.modular.settings import FAMILIES


NAMES = {
    "adamw": "AdamW",
    "adam-layca": "Adam + Layca",
    "sgd-layca": "SGD + Layca",
    "hyperball": "Hyperball (AdamH)",
}
"""How the report names each family."""


def array(values: Sequence[Any]) -> np.ndarray:
    """Floats with NaN for None (a non-finite value in the JSON)."""
    return np.array([math.nan if v is None else v for v in values], float)


def _value(x: Any) -> float | None:
    """A JSON-ready float: None when not finite."""
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_sd(values: Sequence[Any]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN when a
    value is missing (a diverged seed)."""
    a = array(values)
    if len(a) == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _steps(values: Sequence[int | None]) -> dict[str, Any]:
    """Steps to 99% over seeds: which reached it, mean and sd of those."""
    reached = [v for v in values if v is not None]
    mean, sd = _mean_sd(reached)
    return {
        "per_seed": list(values),
        "reached": len(reached),
        "mean": _value(mean),
        "std": _value(sd),
    }


def hparams_text(s: Mapping[str, Any]) -> str:
    return s["label"].split(", ", 1)[1] if ", " in s["label"] else ""


def config_stats(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration's statistics over its seeds.

    Returns:
      ``label``, ``family``, ``hparams``, ``n`` (seeds), the final
      ``train_mean``, ``val_mean`` and ``test_mean`` / ``test_std``
      accuracies, ``steps_val`` and ``steps_test`` (steps to 99%, see
      ``_steps``) and ``final_rotation`` (per layer, mean over seeds);
      None where not finite.
    """
    runs = entry["runs"]
    test_mean, test_std = _mean_sd([r["final_test"] for r in runs])
    layers = list(runs[0]["rotation"])
    rot = {k: _mean_sd([r["rotation"][k][-1] for r in runs])[0] for k in layers}
    return {
        "label": entry["label"],
        "family": entry["family"],
        "hparams": dict(entry["hparams"]),
        "n": len(runs),
        "train_mean": _value(_mean_sd([r["final_train"] for r in runs])[0]),
        "val_mean": _value(_mean_sd([r["final_val"] for r in runs])[0]),
        "test_mean": _value(test_mean),
        "test_std": _value(test_std),
        "steps_val": _steps([r["steps_to_99_val"] for r in runs]),
        "steps_test": _steps([r["steps_to_99_test"] for r in runs]),
        "final_rotation": {k: _value(v) for k, v in rot.items()},
    }


def selection_key(stats: Mapping[str, Any]) -> tuple[float, int, float]:
    """How a family's configuration is picked, on validation only: the
    highest mean final validation accuracy, then the most seeds reaching
    99% validation accuracy, then the fewest steps to it (a diverged
    configuration, None, is never picked)."""
    val, steps = stats["val_mean"], stats["steps_val"]
    mean = steps["mean"]
    return (
        -math.inf if val is None else val,
        steps["reached"],
        -math.inf if mean is None else -mean,
    )


def _mean_curve(curves: Sequence[Sequence[Any]]) -> list[float | None]:
    """The mean over seeds at each point (None where a seed has None)."""
    rows = np.array([array(c) for c in curves])
    return [_value(v) for v in rows.mean(axis=0)]


def _curves(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The mean curves of a configuration over its seeds."""
    runs = entry["runs"]
    mean = lambda key: _mean_curve([r[key] for r in runs])
    return {
        "steps": list(entry["eval_steps"]),
        "train": mean("train"),
        "val": mean("val"),
        "test": mean("test"),
        "test_per_seed": [list(r["test"]) for r in runs],
        "rotation": {
            k: _mean_curve([r["rotation"][k] for r in runs])
            for k in runs[0]["rotation"]
        },
    }


def summarize(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The results block of the study.

    Args:
      entries: :func:`~layca_optax.experiments.modular.run_unit`'s
        entries (every configuration of every family trained).

    Returns:
      ``{"setup", "families", "claims"}``: ``families`` maps each family
      (in :data:`FAMILIES` order) to its ``grid`` (:func:`config_stats` of
      each configuration), its ``best`` configuration (picked with
      :func:`selection_key`, on validation) and the ``curves`` of that one
      (mean over seeds); ``claims`` are :func:`check_claims`'s.

    Raises:
      ValueError: no entries, or entries of different setups.
    """
    if not entries:
        raise ValueError("summarize: no entries")
    setup = entries[0]["setup"]
    if any(e["setup"] != setup for e in entries):
        raise ValueError("summarize: the entries' setups differ")
    families: dict[str, dict[str, Any]] = {}
    present = [f for f in FAMILIES if any(e["family"] == f for e in entries)]
    for family in present:
        mine = [e for e in entries if e["family"] == family]
        grid = [config_stats(e) for e in mine]
        best = max(range(len(grid)), key=lambda i: selection_key(grid[i]))
        families[family] = {
            "grid": grid,
            "best": grid[best],
            "curves": _curves(mine[best]),
        }
    claims = check_claims({f: b["best"] for f, b in families.items()})
    return {"setup": setup, "families": families, "claims": claims}


# ------------------------------------------------------------- verdicts


def _claim(claim: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "evidence": evidence}


def _acc(s: Mapping[str, Any]) -> str:
    """``"label: 99.10 +- 0.20% (n=3)"``."""
    return (
        f"{s['label']}: {number(s['test_mean'], scale=100)} +- "
        f"{number(s['test_std'], scale=100)}% (n={s['n']})"
    )


def _welch(s: Mapping[str, Any]) -> dict[str, Any]:
    """Test accuracy in the keys :func:`welch_t` reads (NaN for None)."""
    nan = lambda v: math.nan if v is None else v
    return {
        "test_mean": nan(s["test_mean"]),
        "test_std": nan(s["test_std"]),
        "n": s["n"],
    }


def accuracy_claim(
    x: Mapping[str, Any], adamw: Mapping[str, Any]
) -> dict[str, str]:
    """``x`` (no weight decay) matches or beats tuned AdamW on final test
    accuracy: holds when ``x`` is at most :data:`MATCH_POINTS` points
    below; does not hold when it is further below with Welch's t at or
    below ``-T_THRESHOLD``; inconclusive when further below but
    ``|t| < T_THRESHOLD``, with fewer than 2 seeds, or a diverged run."""
    name = NAMES.get(x["family"], x["family"])
    claim = f"{name} (no weight decay) matches or beats tuned AdamW in final "
    claim += "test accuracy"
    a, b = _welch(x), _welch(adamw)
    diff, t = 100 * (a["test_mean"] - b["test_mean"]), welch_t(a, b)
    evidence = (
        f"{_acc(x)}; {_acc(adamw)}; difference {diff:+.2f} points, Welch t "
        f"{t:+.2f} (holds: at most {MATCH_POINTS} points below)."
    )
    if math.isnan(diff) or min(x["n"], adamw["n"]) < 2:
        return _claim(claim, "inconclusive", evidence)
    if diff >= -MATCH_POINTS:
        return _claim(claim, "holds", evidence)
    if t <= -T_THRESHOLD:
        return _claim(claim, "does not hold", evidence)
    return _claim(claim, "inconclusive", evidence + " Too noisy to tell.")


def _reach(s: Mapping[str, Any]) -> str:
    steps = s["steps_test"]
    if not steps["reached"]:
        return f"{s['label']}: never (0/{s['n']} seeds)"
    return (
        f"{s['label']}: {number(steps['mean'], '.0f')} +- "
        f"{number(steps['std'], '.0f')} steps ({steps['reached']}/{s['n']} "
        "seeds)"
    )


def _speed_verdict(
    x: Mapping[str, Any], adamw: Mapping[str, Any]
) -> tuple[str, float]:
    """The speed claim's verdict and Welch's t of the steps (x slower:
    positive; NaN unless both reached 99% with the same seeds' count)."""
    sx, sw = x["steps_test"], adamw["steps_test"]
    if sx["reached"] != sw["reached"] or not sx["reached"]:
        if sx["reached"] == sw["reached"]:
            return "inconclusive", math.nan
        better = sx["reached"] > sw["reached"]
        return ("holds" if better else "does not hold"), math.nan
    a = {"test_mean": sx["mean"], "test_std": sx["std"], "n": sx["reached"]}
    b = {"test_mean": sw["mean"], "test_std": sw["std"], "n": sw["reached"]}
    t = welch_t(a, b)
    if sx["mean"] <= sw["mean"]:
        return "holds", t
    return ("does not hold" if t >= T_THRESHOLD else "inconclusive"), t


def speed_claim(
    x: Mapping[str, Any], adamw: Mapping[str, Any]
) -> dict[str, str]:
    """``x`` reaches 99% test accuracy in no more steps than tuned AdamW.

    Holds when ``x`` reaches it with more seeds, or with as many and at
    most AdamW's mean steps; does not hold with fewer seeds, or as many
    and slower with Welch's t at or above ``T_THRESHOLD``; inconclusive
    when neither reaches it, or slower with ``|t| < T_THRESHOLD``.
    """
    name = NAMES.get(x["family"], x["family"])
    verdict, t = _speed_verdict(x, adamw)
    evidence = f"steps to 99% test accuracy: {_reach(x)}; {_reach(adamw)}"
    if not math.isnan(t):
        evidence += f"; Welch t of the steps {t:+.2f} (positive: slower)"
    return _claim(
        f"{name} reaches 99% test accuracy in no more steps than tuned AdamW",
        verdict,
        evidence + ".",
    )


def check_claims(best: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Each rotation-controlling family against tuned AdamW.

    Args:
      best: each family's picked configuration (:func:`config_stats`).

    Returns:
      ``[{"claim", "verdict", "evidence"}]``, an accuracy claim
      (:func:`accuracy_claim`) then a speed claim (:func:`speed_claim`)
      per family other than AdamW; none without AdamW.
    """
    if "adamw" not in best:
        return []
    claims = []
    for family in [f for f in FAMILIES[1:] if f in best]:
        claims.append(accuracy_claim(best[family], best["adamw"]))
        claims.append(speed_claim(best[family], best["adamw"]))
    return claims
