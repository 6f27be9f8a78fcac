"""The language-model study's statistics and verdicts: the target (tuned
AdamW's mean final validation loss), each seed's steps to reach it, each
family's final validation and test loss (nats and bits per character),
characters per second, mean curves, and the claims against tuned AdamW
with their verdicts (Welch's t over seeds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from layca_optax.experiments.common.welch import T_THRESHOLD, welch_t
from layca_optax.experiments.lm.settings import FAMILIES


NAMES = {
    "adamw": "AdamW",
    "adam-layca": "Adam + Layca",
    "muon": "Muon",
    "muon-layca": "Muon + Layca",
    "hyperball": "Hyperball (AdamH)",
    "layca-tangent-adam": "Layca, tangent Adam",
    "layca-tangent": "Layca, tangent momentum",
    "layca-momentum": "Layca, plain momentum",
    "adamw-brake": "AdamW + radial brake",
}
"""How the report names each family."""

MATCH_NATS = 0.01
"""Two mean test losses within this many nats per character match."""

LN2 = math.log(2)


def array(values: Sequence[Any]) -> np.ndarray:
    """Floats with NaN for None (a non-finite value in the JSON)."""
    return np.array([math.nan if v is None else v for v in values], float)


def _value(x: Any, digits: int = 6) -> float | None:
    """A JSON-ready float: None when not finite."""
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def mean_sd(values: Sequence[Any]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` (sample sd; 0 for one value; None when a
    value is missing)."""
    a = array(values)
    if not len(a):
        return {"mean": None, "std": None, "n": 0}
    sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": _value(a.mean()), "std": _value(sd), "n": len(a)}


def steps_to(curve: Sequence[Any], steps: Sequence[int], target: float):
    """The first step whose validation loss is at most ``target`` (None:
    never).

    Example:
      >>> steps_to([4.0, 2.5, 2.0, 2.1], [0, 25, 50, 75], 2.05)
      50
    """
    for value, step in zip(curve, steps, strict=True):
        if value is not None and value <= target:
            return int(step)
    return None


def _seed_record(run: Mapping[str, Any], steps: list[int], target: float):
    val, test = run["final_val_loss"], run["final_test_loss"]
    bits = lambda v: None if v is None else _value(v / LN2)
    return {
        "seed": run["seed"],
        "steps_to_target": steps_to(run["val_loss"], steps, target),
        "final_val_loss": val,
        "final_test_loss": test,
        "final_val_bpc": bits(val),
        "final_test_bpc": bits(test),
        "chars_per_second": run["chars_per_second"],
    }


def _band(curves: Sequence[Sequence[Any]]) -> dict[str, list]:
    rows = np.array([array(c) for c in curves])
    return {
        "mean": [_value(v) for v in rows.mean(axis=0)],
        "min": [_value(v) for v in rows.min(axis=0)],
        "max": [_value(v) for v in rows.max(axis=0)],
    }


def _family(entry: Mapping[str, Any], target: float) -> dict[str, Any]:
    """One family's block: its pick, grid, per-seed records, summary."""
    runs, steps = entry["runs"], entry["eval_steps"]
    seeds = [_seed_record(r, steps, target) for r in runs]
    reached = [s["steps_to_target"] for s in seeds]
    reached = [v for v in reached if v is not None]
    mean = lambda key: [r[key] for r in runs]
    return {
        "label": entry["label"],
        "hparams": entry["hparams"],
        "grid": [
            {
                "label": g["label"],
                "hparams": g["hparams"],
                "final_val_loss": g["run"]["final_val_loss"],
            }
            for g in entry["grid"]
        ],
        "seeds": seeds,
        "summary": {
            "final_val_loss": mean_sd(mean("final_val_loss")),
            "final_test_loss": mean_sd(mean("final_test_loss")),
            "steps_to_target": {
                **mean_sd(reached),
                "reached": len(reached),
                "seeds": len(seeds),
            },
            "chars_per_second": mean_sd(mean("chars_per_second")),
        },
        "curves": {
            "steps": steps,
            "val_loss": _band([r["val_loss"] for r in runs]),
            "rotation": {
                k: _band([r["rotation"][k] for r in runs])["mean"]
                for k in runs[0]["rotation"]
            },
            "slices": {
                k: _band([r["slices"][k] for r in runs])["mean"]
                for k in runs[0]["slices"]
            },
        },
    }


def summarize(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The results block: ``setup``, ``target`` (AdamW's mean final
    validation loss, nats), ``families`` (each family's block, in
    :data:`FAMILIES` order) and ``claims``.

    Raises:
      ValueError: no AdamW entry, or entries of different setups.
    """
    by = {e["family"]: e for e in entries}
    if "adamw" not in by:
        raise ValueError("summarize: no AdamW entry (the target is its loss)")
    setup = by["adamw"]["setup"]
    if any(e["setup"] != setup for e in entries):
        raise ValueError("summarize: the entries' setups differ")
    finals = array([r["final_val_loss"] for r in by["adamw"]["runs"]])
    target = float(finals.mean())
    families = {f: _family(by[f], target) for f in FAMILIES if f in by}
    return {
        "setup": setup,
        "target": _value(target),
        "families": families,
        "claims": check_claims(families),
    }


# ------------------------------------------------------------- verdicts


def _claim(claim: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "evidence": evidence}


def _loss_text(name: str, s: Mapping[str, Any]) -> str:
    m, sd = s["mean"], s["std"]
    if m is None or sd is None:
        return f"{name}: diverged (n={s['n']})"
    return f"{name}: {m:.4f} +- {sd:.4f} nats (n={s['n']})"


def loss_claim(
    name: str, x: Mapping, adamw: Mapping, ref: str = "AdamW"
) -> dict[str, str]:
    """``x`` matches or beats tuned AdamW (or the family named ``ref``)
    in final test loss: holds when at most :data:`MATCH_NATS` above; does
    not hold when further above with Welch's t at or above
    ``T_THRESHOLD``; inconclusive otherwise."""
    claim = f"{name} matches or beats tuned {ref} in final test loss"
    a, b = x["final_test_loss"], adamw["final_test_loss"]
    evidence = f"{_loss_text(name, a)}; {_loss_text(ref, b)}"
    if a["mean"] is None or b["mean"] is None or min(a["n"], b["n"]) < 2:
        return _claim(claim, "inconclusive", evidence + ".")
    diff = a["mean"] - b["mean"]
    t = welch_t(
        {"l_mean": a["mean"], "l_std": a["std"], "n": a["n"]},
        {"l_mean": b["mean"], "l_std": b["std"], "n": b["n"]},
        on="l",
    )
    evidence += f"; difference {diff:+.4f} nats, Welch t {t:+.2f}"
    if diff <= MATCH_NATS:
        return _claim(claim, "holds", evidence + ".")
    if t >= T_THRESHOLD:
        return _claim(claim, "does not hold", evidence + ".")
    return _claim(claim, "inconclusive", evidence + ". Too noisy to tell.")


def speed_claim(
    name: str, x: Mapping, adamw: Mapping, ref: str = "AdamW"
) -> dict[str, str]:
    """``x`` reaches the target in no more steps than tuned AdamW (or the
    family named ``ref``): holds with more seeds reaching it, or as many
    and at most its mean steps; does not hold with fewer seeds, or as
    many and slower with Welch's t at or above ``T_THRESHOLD``;
    inconclusive otherwise."""
    claim = f"{name} reaches the target in no more steps than tuned {ref}"
    a, b = x["steps_to_target"], adamw["steps_to_target"]
    text = lambda n, s: (
        f"{n}: {s['mean']:.0f} +- {s['std']:.0f} steps ({s['reached']}/"
        f"{s['seeds']} seeds)"
        if s["reached"]
        else f"{n}: never"
    )
    evidence = f"{text(name, a)}; {text(ref, b)}"
    if a["reached"] != b["reached"] or not a["reached"]:
        verdict = (
            "inconclusive"
            if a["reached"] == b["reached"]
            else "holds"
            if a["reached"] > b["reached"]
            else "does not hold"
        )
        return _claim(claim, verdict, evidence + ".")
    t = welch_t(
        {"s_mean": a["mean"], "s_std": a["std"], "n": a["n"]},
        {"s_mean": b["mean"], "s_std": b["std"], "n": b["n"]},
        on="s",
    )
    evidence += f"; Welch t {t:+.2f} (positive: slower)."
    if a["mean"] <= b["mean"]:
        return _claim(claim, "holds", evidence)
    verdict = "does not hold" if t >= T_THRESHOLD else "inconclusive"
    return _claim(claim, verdict, evidence)


PAIRS = (
    ("layca-tangent-adam", "adam-layca"),
    ("layca-tangent", "layca-momentum"),
)
"""``(family, its control)``: compared with each other too (does the
tangent transport of the first moment matter?)."""


def check_claims(families: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """A loss claim and a speed claim for each family against AdamW, and
    for each of :data:`PAIRS` present, the family against its control."""
    if "adamw" not in families:
        return []
    adamw = families["adamw"]["summary"]
    claims = []
    for family in [f for f in FAMILIES[1:] if f in families]:
        x = families[family]["summary"]
        claims.append(loss_claim(NAMES[family], x, adamw))
        claims.append(speed_claim(NAMES[family], x, adamw))
    for family, control in PAIRS:
        if family in families and control in families:
            x, y = families[family]["summary"], families[control]["summary"]
            args = (NAMES[family], x, y, NAMES[control])
            claims += [loss_claim(*args), speed_claim(*args)]
    return claims
