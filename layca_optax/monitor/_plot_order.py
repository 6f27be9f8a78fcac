"""Which curves the rotation plots draw, in which order, and their axes:
the x label, the y scale and range, the legend argument."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax._masks import KeyPathLike, path_str
from layca_optax.monitor._history import RotationHistory


SMALL = 0.5
"""Cosine-distance curves whose values all lie below this get a y-axis
fitted to them (0 to 1.1 times the largest) instead of the paper's 0 to 1."""

_SLICE = re.compile(r"\d+(?:/\d+)*")
_LAST_INDEX = re.compile(r"(.*)/\d+")


def natural_key(name: str) -> tuple:
    """Sort key that compares digit runs as numbers: ``dense2`` before
    ``dense10``, ``h/kernel/2`` before ``h/kernel/10``.

    Example:
      >>> sorted(["dense10", "dense2", "conv"], key=natural_key)
      ['conv', 'dense2', 'dense10']
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _is_slice_of(name: str, leaf: str) -> bool:
    """Whether ``name`` is ``leaf/i`` or ``leaf/i/j``... (a per-slice key)."""
    rest = name[len(leaf) + 1 :]
    return name.startswith(leaf + "/") and bool(_SLICE.fullmatch(rest))


def _paths(arg: str, value: Any) -> list[str]:
    """``value`` (a sequence of paths) as strings, or ``ValueError``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(
            f"{checks.arg(arg)} must be a list of layer names (paths "
            f"such as 'h/mlp/kernel'), got {value!r}."
        )
    return [path_str(p) for p in value]


def layer_names(
    history: Any,
    prefix: str,
    layers: Sequence[KeyPathLike] | None,
    layer_order: Sequence[KeyPathLike] | None,
) -> list[str]:
    """The names (after ``prefix``) of the curves to draw, in order, or
    ``ValueError`` for a bad ``history``, ``prefix``, ``layers`` or
    ``layer_order``."""
    if not isinstance(history, RotationHistory):
        raise ValueError(
            f"{checks.arg('history')} must be a RotationHistory, got "
            f"{type(history).__name__}."
        )
    if not len(history):
        raise ValueError(
            f"{checks.arg('history')}: the history is empty; append records "
            "first."
        )
    checks.check_prefix(prefix)
    known = history.layers(prefix)
    names = select(prefix, known, layers)
    if layer_order is not None:
        names = order(names, layer_order, known, prefix)
    return names


def select(
    prefix: str,
    known: list[str],
    layers: Sequence[KeyPathLike] | None,
) -> list[str]:
    """The curves to draw: ``layers`` in their order, a leaf's path standing
    for all its slices (``h/kernel`` for ``h/kernel/0``...), else every
    known name in natural order."""
    if layers is None:
        return sorted(known, key=natural_key)
    names: list[str] = []
    for name in _paths("layers", layers):
        slices = [k for k in known if _is_slice_of(k, name)]
        if name not in known and not slices:
            raise ValueError(
                f"{checks.arg('layers')}: no layer [{name!r}] under "
                f"{prefix!r}; the layers are {known}."
            )
        names += [name] if name in known else sorted(slices, key=natural_key)
    if not names:
        raise ValueError(
            f"{checks.arg('layers')}: no layer [] under {prefix!r}; the "
            f"layers are {known}."
        )
    return names


def _absent(given: list[str], known: list[str], prefix: str) -> None:
    """``ValueError`` naming the entries of ``layer_order`` that are neither
    a name in the history nor the leaf of per-slice names there."""
    absent = [
        g
        for g in given
        if g not in known and not any(_is_slice_of(k, g) for k in known)
    ]
    if absent:
        raise ValueError(
            f"{checks.arg('layer_order')} names layers the history does not "
            f"have under {prefix!r}: {absent[:4]}"
            f"{' ...' if len(absent) > 4 else ''}; its layers are "
            f"{known[:8]}{' ...' if len(known) > 8 else ''}."
        )


def order(
    names: list[str],
    layer_order: Sequence[KeyPathLike],
    known: list[str],
    prefix: str,
) -> list[str]:
    """``names`` sorted by their layer's rank in ``layer_order`` (a per-slice
    name ``leaf/i/j`` takes its own rank if listed, else its leaf's),
    slices of a leaf by index; ``ValueError`` for a name of ``layer_order``
    not in ``known`` (the history's names) or a name it leaves out."""
    given = _paths("layer_order", layer_order)
    _absent(given, known, prefix)
    rank: dict[str, int] = {}
    for i, name in enumerate(given):
        rank.setdefault(name, i)

    def leaf_rank(name: str) -> int | None:
        while name not in rank:
            match = _LAST_INDEX.fullmatch(name)
            if match is None:
                return None
            name = match.group(1)
        return rank[name]

    missing = [n for n in names if leaf_rank(n) is None]
    if missing:
        raise ValueError(
            f"{checks.arg('layer_order')} must list every plotted layer (or "
            f"the leaf of a per-slice name), e.g. as `forward_order` "
            f"returns it; it does not list {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}. It lists {given[:8]}"
            f"{' ...' if len(given) > 8 else ''}."
        )
    return sorted(names, key=lambda n: (leaf_rank(n), natural_key(n)))


def check_ylim(ylim: Any) -> tuple[float, float] | None:
    """``ylim`` as two floats (or None), or ``ValueError``."""
    if ylim is None:
        return None
    try:
        low, high = (float(v) for v in ylim)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"{checks.arg('ylim')} must be None (automatic) or a pair "
            f"(bottom, top) of finite numbers with bottom < top, got {ylim!r}."
        )
    return low, high


def curves_ylim(ax: Any) -> tuple[float, float]:
    """The automatic y-range of the rotation curves: the paper's 0 to 1,
    or 0 to 1.1 times the largest value when all lie below :data:`SMALL`.
    Reads every line of ``ax`` and of the axes sharing its y-axis, so that
    panels with ``sharey=True`` end with one range fitting them all."""
    siblings = ax.get_shared_y_axes().get_siblings(ax)
    values = [
        np.asarray(line.get_ydata(), np.float64).ravel()
        for a in siblings
        for line in a.get_lines()
    ]
    y = np.concatenate(values) if values else np.zeros(0)
    y = y[np.isfinite(y)]
    top = float(y.max()) if y.size else 0.0
    return (0.0, 1.1 * top) if 0 < top < SMALL else (0.0, 1.0)


def check_legend(legend: Any) -> None:
    """``ValueError`` unless ``legend`` is None, True or False."""
    if legend is not None and not isinstance(legend, bool):
        raise ValueError(
            f"{checks.arg('legend')} must be None (automatic), True or "
            f"False, got {legend!r}."
        )


def x_label(history: RotationHistory, given: str | None) -> str:
    """``given``, else the history's unit ("Step" when it is not said)."""
    if given is not None and not isinstance(given, str):
        raise ValueError(
            f"{checks.arg('x_label')} must be a str or None (the history's "
            f"unit), got {given!r}."
        )
    if given is not None:
        return given
    return "Epoch" if history.unit == "epoch" else "Step"


def y_axis(ax: Any, ylim: Any, curves: bool, positive: bool) -> None:
    """Sets the y scale (log for positive rates) and range of ``ax``."""
    limits = check_ylim(ylim)  # checked before drawing too
    log = not curves and positive  # a log scale needs a positive value
    if log:
        ax.set_yscale("log")
    if limits is not None and log and limits[0] <= 0:
        raise ValueError(
            f"{checks.arg('ylim')} must have a positive bottom on the log "
            f"scale of the rates, got {ylim!r}."
        )
    if limits is None and curves:
        limits = curves_ylim(ax)
    if limits is not None:
        ax.set_ylim(*limits)
