"""Whether an optimizer state fits the params it is updated with.

A state restored into a model of another shape, or made for other params,
fails deep inside optax ("add got incompatible shapes for broadcasting")
or, where shapes broadcast, runs silently wrong. The per-leaf parts of an
optax state (Adam's moments, momentum) are trees of the params' structure,
or of the layers' and the other leaves' (the rest ``optax.MaskedNode``):
each such subtree must have the params' shapes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from layca_optax import _checks as checks
from layca_optax._masks import path_str


def _structures(params: Any, labels: Any) -> dict[Any, Any]:
    """The treedef of each label's masked part of the params (the other
    leaves ``optax.MaskedNode``)."""
    defs = {}
    for label in set(jax.tree.leaves(labels)):
        masked = jax.tree.map(
            lambda p, lab, label=label: (
                p if lab == label else optax.MaskedNode()
            ),
            params,
            labels,
        )
        defs[label] = jax.tree.structure(masked)
    return defs


def _parts(state: Any, targets: set[Any]) -> list[Any]:
    """The subtrees of ``state`` whose structure is one of ``targets``."""
    is_part = lambda x: jax.tree.structure(x) in targets
    return [
        part
        for part in jax.tree.leaves(state, is_leaf=is_part)
        if part is not state and is_part(part)
    ]


def _fits(shape: tuple, want: tuple) -> bool:
    """Whether a state leaf of ``shape`` fits a param of shape ``want``:
    the same shape, a per-layer value with the reduced axes kept as 1, or
    of another rank (per-layer scalars, sketches)."""
    if len(shape) != len(want):
        return True
    return all(n in (1, m) for n, m in zip(shape, want, strict=True))


def check_state_fits(state: Any, params: Any, labels: Any) -> None:
    """``ValueError`` naming the first leaf where a per-leaf part of
    ``state`` has another shape than ``params``', or where a partition's
    part was made for another mask (``labels``: the leaves' labels now)."""
    if not jax.tree.leaves(params):
        return
    by_label = _structures(params, labels)
    leaf = jax.tree.structure(0)  # a bare array's: every state leaf has it
    targets = {jax.tree.structure(params), *by_label.values()} - {leaf}
    inner = getattr(state, "inner_states", None)
    if isinstance(inner, dict):
        for label, sub in inner.items():
            got = {jax.tree.structure(p) for p in _parts(sub, targets)}
            if label in by_label and got - {by_label[label], leaf}:
                raise ValueError(
                    f"`{checks.caller()}`'s update: the state's "
                    f"{label!r} part was made for another split of the "
                    "leaves into layers and others than `mask` gives now: "
                    "a `mask` callable must give the same tree at init and "
                    "at each update (compute it once from the initial "
                    "params and pass the tree)."
                )
    shapes = {
        path_str(p): np.shape(x)
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    for part in _parts(state, targets):
        for path, x in jax.tree_util.tree_flatten_with_path(part)[0]:
            name = path_str(path)
            want = shapes.get(name)
            if want is not None and not _fits(np.shape(x), want):
                raise ValueError(
                    f"`{checks.caller()}`'s update: the optimizer state holds "
                    f"{np.shape(x)} for the leaf {name!r}, whose params have "
                    f"shape {want}: the state was made by `init` for other "
                    "params (restored into a model of another shape?). Call "
                    "`tx.init(params)`, or restore the state that matches "
                    "these params."
                )


def explain(err: Exception) -> ValueError:
    """The error of an update that failed inside optax on a state that
    does not fit the params."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ValueError(
        f"`{checks.caller()}`'s update failed inside optax "
        f"({type(err).__name__}: {first}). The state does not fit these "
        "params or gradients: it was made by `init` for params of another "
        "structure, shape or mask (a `mask` callable must give the same "
        "tree at init and at each update), or restored from another model."
    )
