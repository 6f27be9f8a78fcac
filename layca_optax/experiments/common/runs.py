"""A training run as the studies record it: its ``results.json`` entry
(JSON-ready numbers) and its per-epoch history."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

import layca_optax


def short_name(path: str) -> str:
    """``"Conv_0/kernel"`` -> ``"Conv_0"``."""
    return path.removesuffix("/kernel")


def history(run: Mapping[str, Any]) -> layca_optax.RotationHistory:
    """One run's per-epoch records as a :class:`layca_optax.RotationHistory`:
    ``rotation/<layer>``, ``train_loss`` and ``test_accuracy`` per epoch."""
    curves = {f"rotation/{k}": v for k, v in run["rotation_curves"].items()}
    curves["train_loss"] = run["train_loss"]
    curves["test_accuracy"] = run["test_accuracy_curve"]
    out = layca_optax.RotationHistory(unit="epoch")
    for epoch, values in enumerate(zip(*curves.values(), strict=True), 1):
        nan = float("nan")
        row = [nan if v is None else v for v in values]
        out.append(epoch, dict(zip(curves, row, strict=True)))
    return out


def _floats(values: Iterable[Any]) -> list[float | None]:
    """JSON-ready floats (6 significant digits); None where not finite."""
    out = [float(v) for v in values]
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in out]


def finite(value: float | None) -> float | None:
    """A JSON-ready float (6 significant digits); None if not finite."""
    return None if value is None else _floats([value])[0]


def summary(result: Any, **settings: Any) -> dict[str, Any]:
    """One optimizer's entry of ``results.json``.

    Args:
      result: its :class:`~layca_optax.experiments.TrainResult`.
      **settings: put first (the optimizer's description, learning rate).

    Returns:
      The settings, the final accuracies, the mean and minimum final layer
      rotation, each layer's final rotation and per-epoch curve, the train
      loss and test accuracy per epoch, and the wall times.
    """
    final = {k: v[-1] for k, v in result.rotation.items()}
    mean, low = _floats([np.mean(list(final.values())), min(final.values())])
    return {
        **settings,
        "train_accuracy": _floats([result.train_accuracy])[0],
        "test_accuracy": _floats([result.test_accuracy])[0],
        "rotation_mean": mean,
        "rotation_min": low,
        "final_rotation": dict(
            zip(final, _floats(final.values()), strict=True)
        ),
        "rotation_curves": {k: _floats(v) for k, v in result.rotation.items()},
        "train_loss": _floats(result.train_loss),
        "test_accuracy_curve": _floats(result.test_accuracy_curve),
        "seconds": round(result.seconds, 2),
        "compile_seconds": round(result.compile_seconds, 2),
    }
