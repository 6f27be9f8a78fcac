"""The keys of the metric dicts: per-slice names and prefixes.

A per-layer value that is an array (one value per slice of a leaf, with
``axis=...``) is logged as one scalar per entry, named with its indices:
``"rotation/h/kernel/3"``. :func:`rotation_metrics` names its values so in
the step, :class:`RotationHistory` the arrays it is given on the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from layca_optax import _checks as checks


def slice_items(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` for a scalar; for an array, one item per entry,
    named ``name/i`` (one axis) or ``name/i/j`` (two), in C order.

    Works on traced values (static shapes) and on NumPy arrays.

    Example:
      >>> import numpy as np
      >>> dict(slice_items("h/kernel", np.array([0.1, 0.2])))
      {'h/kernel/0': np.float64(0.1), 'h/kernel/1': np.float64(0.2)}
    """
    shape = np.shape(value)
    if not shape:
        yield name, value
        return
    for index in np.ndindex(*shape):
        yield name + "".join(f"/{i}" for i in index), value[index]


def split_slices(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``{name: scalar}`` from ``(name, value)`` pairs, each array value
    split by :func:`slice_items`; ``ValueError`` if a name repeats (a key,
    and an entry of an array split into per-slice keys)."""
    out: dict[str, Any] = {}
    for key, value in items:
        for name, v in slice_items(key, value):
            if name in out:
                raise ValueError(
                    f"`{checks.caller()}` names {name!r} twice: a key (or a "
                    "leaf's path) and an entry of an array value split into "
                    "per-slice keys; rename one of them."
                )
            out[name] = v
    return out
