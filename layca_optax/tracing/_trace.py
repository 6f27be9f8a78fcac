"""A model traced to a jaxpr on abstract values, and walked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from layca_optax import _checks as checks
from layca_optax.tracing._jaxpr_walk import NONE, Walk
from layca_optax.tracing._layout_walk import LayoutWalk


# Arguments of `fn` traced as abstract values; other leaves stay static.
_ARRAYS = (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)


def trace(
    fn: Callable[..., Any], params: Any, args: tuple, kwargs: dict
) -> Any:
    """``fn(params, *args, **kwargs)`` as a closed jaxpr: the leaves of
    ``params`` and the array leaves of ``args``/``kwargs`` are abstract
    (nothing is computed); other leaves (flags such as ``train=False``)
    are passed as they are."""
    if not callable(fn):
        raise ValueError(f"{checks.arg('fn')} must be callable, got {fn!r}.")
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ARRAYS)]

    def call(p, traced):
        full = list(leaves)
        for i, leaf in zip(dynamic, traced, strict=True):
            full[i] = leaf
        a, k = jax.tree.unflatten(treedef, full)
        return fn(p, *a, **k)

    return jax.make_jaxpr(call)(params, [leaves[i] for i in dynamic])


def walk(
    fn: Callable[..., Any], params: Any, args: tuple, kwargs: dict
) -> LayoutWalk:
    """The :class:`LayoutWalk` of ``fn``'s jaxpr: each param leaf's first
    use, in order, with its stacked and contracting axes."""
    closed = trace(fn, params, args, kwargs)
    shapes = [tuple(np.shape(x)) for x in jax.tree.leaves(params)]
    walker = LayoutWalk(shapes)
    extra = len(closed.jaxpr.invars) - len(shapes)
    walker.jaxpr(closed, walker.initial() + [NONE] * extra)
    return walker


__all__ = ["Walk", "trace", "walk"]
