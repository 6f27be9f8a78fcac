"""What a :class:`~layca_optax.analysis.ReinitResult` may hold: its fields
checked, and normalized (tuples of str, float64 arrays), when it is made."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _error(name: str, value: Any, expected: str) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ValueError(
        f"`ReinitResult({name}=...)` must be {expected}, got {shown}."
    )


def _strings(value: Any, name: str) -> tuple[str, ...]:
    """A tuple of distinct str from a sequence of str (not a bare str)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _error(name, value, "a sequence of str")
    if not all(isinstance(v, str) for v in value):
        raise _error(name, value, "a sequence of str")
    if len(set(value)) != len(value):
        raise _error(name, value, "a sequence of distinct str")
    return tuple(value)


def _real(value: Any, name: str, *, finite: bool = False) -> float:
    """A Python float from a real number (not a bool)."""
    is_real = isinstance(value, int | float | np.integer | np.floating)
    if isinstance(value, bool | np.bool_) or not is_real:
        raise _error(name, value, "a real number")
    if finite and not math.isfinite(value):
        raise _error(name, value, "a finite real number")
    return float(value)


def _matrix(value: Any, name: str, rows: int, cols: int | None) -> Any:
    """A float64 ``[rows, cols]`` array (any number of columns for None)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise _error(name, value, "a 2-D array of real numbers") from err
    real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(
        array.dtype, np.floating
    )
    if array.ndim != 2 or not real:
        raise _error(name, value, "a 2-D array of real numbers")
    if array.shape[0] != rows or (cols is not None and array.shape[1] != cols):
        want = f"[{rows}, {cols if cols is not None else 'draws'}]"
        raise ValueError(
            f"`ReinitResult({name}=...)` has shape {array.shape}; it must be "
            f"{want} (one row per path, one column per "
            f"{'checkpoint label' if cols is not None else 'draw'})."
        )
    return array.astype(np.float64)


def checked_fields(result: Any) -> dict[str, Any]:
    """The fields of ``result``, checked and normalized; ``ValueError``
    naming the field and the value otherwise."""
    paths = _strings(result.paths, "paths")
    labels = _strings(result.checkpoint_labels, "checkpoint_labels")
    if not labels:
        raise _error(
            "checkpoint_labels",
            result.checkpoint_labels,
            "at least one label (the initialization first)",
        )
    tolerance = _real(result.tolerance, "tolerance", finite=True)
    if tolerance < 0:
        raise _error("tolerance", result.tolerance, "non-negative")
    if not isinstance(result.higher_is_better, bool):
        raise _error("higher_is_better", result.higher_is_better, "a bool")
    return {
        "paths": paths,
        "checkpoint_labels": labels,
        "baseline": _real(result.baseline, "baseline"),
        "reinit": _matrix(result.reinit, "reinit", len(paths), len(labels)),
        "rerandom": _matrix(result.rerandom, "rerandom", len(paths), None),
        "tolerance": tolerance,
    }
