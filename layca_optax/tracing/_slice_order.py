"""Per-slice names in depth order, from a :class:`LayoutWalk`.

A stacked leaf (``(L, d, H, hd)`` consumed inside a ``scan`` over ``L``)
is ``L`` layers; its slices are named as :func:`rotation_metrics` names
them with an ``axis`` that keeps the stacked axes (``"blocks/q/kernel/0"``;
two stacked axes, ``(L, E, ...)`` experts: ``".../0/3"``), and a ``scan``
step's slices come after the previous step's: layer 0's q, k, v, out and
MLP, then layer 1's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from layca_optax.tracing._layout_walk import Group, LayoutWalk


def _nest(leaves: Sequence[int], walker: LayoutWalk, depth: int) -> list:
    """The leaves (in use order) nested by the scans around their use:
    a leaf index, or ``(group, [items])``."""
    out: list[Any] = []
    i = 0
    while i < len(leaves):
        groups = walker.uses[leaves[i]].groups
        if len(groups) <= depth:
            out.append(leaves[i])
            i += 1
            continue
        group, j = groups[depth], i
        while j < len(leaves):
            inner = walker.uses[leaves[j]].groups
            if len(inner) <= depth or inner[depth] is not group:
                break
            j += 1
        out.append((group, _nest(leaves[i:j], walker, depth + 1)))
        i = j
    return out


def _names(
    leaf: int, path: str, walker: LayoutWalk, bound: dict[Group, int]
) -> list[str]:
    """``path``'s slices at the scan steps ``bound``, in C order."""
    use = walker.uses[leaf]
    shape = walker.shapes[leaf]
    ranges = []
    for axis in sorted(use.stacked):
        steps = [bound[g] for g in use.groups if g.axis_of.get(leaf) == axis]
        ranges.append(steps[:1] or range(shape[axis]))
    return [
        path + "".join(f"/{i}" for i in index)
        for index in itertools.product(*ranges)
    ]


def slice_order(
    walker: LayoutWalk, leaves: Sequence[int], paths: Sequence[str]
) -> list[str]:
    """The slices of ``leaves`` (used layers, in first-use order), input
    side first; ``paths[i]`` is leaf ``i``'s path."""
    out: list[str] = []
    seen: set[str] = set()

    def emit(items: list, bound: dict[Group, int]) -> None:
        for item in items:
            if isinstance(item, tuple):
                group, children = item
                steps = range(group.length)
                for step in reversed(steps) if group.reverse else steps:
                    emit(children, {**bound, group: step})
                continue
            for name in _names(item, paths[item], walker, bound):
                if name not in seen:
                    seen.add(name)
                    out.append(name)

    emit(_nest(leaves, walker, 0), {})
    return out
