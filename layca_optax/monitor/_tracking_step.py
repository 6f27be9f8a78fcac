"""What :func:`track_rotation` records of each layer, leaf by leaf.

At init: zeros, the layer's norm and its reference. At each update: the
rotation rate, radial ratio and norm after the update, and the cosine
distance to the reference, in one pass per leaf through
:func:`_sums.per_leaf` (one cached trace per shape and reference).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from layca_optax import _staging as stg, _sums as sm
from layca_optax._axes import Axis
from layca_optax.monitor._formulas import (
    drop_reduced,
    update_metrics,
    update_sums,
)
from layca_optax.monitor._metrics import flatten_like, layer_axes
from layca_optax.monitor._references import EMPTY, Reference, seeds


def _init_leaf(
    axes: tuple[int, ...], reference: Reference, w: Any, seed: Any
) -> tuple:
    """The initial rate, radial ratio, norm, cosine and reference of one
    layer: zeros, its norm, and what ``reference`` stores."""
    w = jnp.asarray(w)
    wf = w.astype(sm.reduction_dtype(w.dtype))
    ww = sm.layer_sums(axes, ww=(wf, wf))["ww"]
    norm = drop_reduced(jnp.sqrt(ww), axes)
    zero = jnp.zeros_like(norm)
    cosine = EMPTY if reference.kind is None else zero
    return zero, zero, norm, cosine, reference.store(w, seed)


def _track_leaf(static: tuple, u: Any, w: Any, ref: Any, seed: Any) -> tuple:
    """Rate, radial ratio, norm and (with a reference) cosine distance of
    one leaf after the update ``u``; ``static`` is ``(axes, reference)``."""
    axes, reference = static
    u, w = jnp.asarray(u), jnp.asarray(w)
    new = jnp.asarray(w + u).astype(w.dtype)  # as optax.apply_updates
    out: tuple = update_metrics(**update_sums(w, u, new, axes))
    if reference.kind is not None:
        out = (*out, reference.cosine(new, ref, seed, axes))
    return tuple(drop_reduced(x, axes) for x in out)


_UPDATE_SUMS = ("ww", "uw", "uu", "nn", "nw")  # update_sums' names


def _track_sums(axes: tuple[int, ...], u: Any, w: Any) -> dict:
    """One layer's :func:`update_sums` for the update ``u`` of ``w``."""
    u, w = jnp.asarray(u), jnp.asarray(w)
    new = jnp.asarray(w + u).astype(w.dtype)  # as optax.apply_updates
    return update_sums(w, u, new, axes)


def _sums_tuple(sums: dict[str, jax.Array]) -> tuple:
    """The sums themselves: each layer's formulas read its own entries
    (XLA GPU computes every layer's in one kernel)."""
    return tuple(sums[name] for name in _UPDATE_SUMS)


def _track_apply(axes: tuple[int, ...], sums: tuple, *_: Any) -> tuple:
    out = update_metrics(**dict(zip(_UPDATE_SUMS, sums, strict=True)))
    return tuple(drop_reduced(x, axes) for x in out)


@stg.staged(stg.Stages(_track_sums, stg.no_args, _sums_tuple, _track_apply))
def _track_no_reference(axes: tuple[int, ...], u: Any, w: Any) -> tuple:
    """Rate, radial ratio and norm of one leaf after the update ``u`` (no
    reference): staged on GPUs (:func:`_staging.map_leaves`), as
    :func:`layca_optax.rotation_metrics`."""
    return _track_apply(axes, _sums_tuple(_track_sums(axes, u, w)))


def _unzip(treedef: Any, rows: list, n: int, empty: Any) -> list[Any]:
    """Per-leaf rows of ``n`` values -> ``n`` trees (``empty`` if no leaf)."""
    if not rows:
        return [empty] * n
    return [treedef.unflatten(col) for col in zip(*rows, strict=True)]


def initial_values(
    params: Any, mask: Any, axis: Axis, reference: Reference, key: Any
) -> list[Any]:
    """The state's per-layer trees at init: rate, radial ratio, norm,
    cosine distance and reference (``EMPTY`` at other leaves)."""
    leaves, treedef = jax.tree.flatten(params)
    axes = layer_axes(params, mask, axis)
    keys = seeds(reference, key, len(leaves))
    rows = [
        (EMPTY,) * 5 if a is None else _init_leaf(a, reference, w, seed)
        for a, w, seed in zip(axes, leaves, keys, strict=True)
    ]
    return _unzip(treedef, rows, 5, params)


def step_values(
    updates: Any,
    params: Any,
    refs_tree: Any,
    mask: Any,
    axis: Axis,
    reference: Reference,
    key: Any,
) -> list[Any]:
    """The state's per-layer trees after the update ``updates`` of
    ``params``: rate, radial ratio, norm and cosine distance to the
    references in ``refs_tree`` (``EMPTY`` at other leaves)."""
    leaves, treedef = jax.tree.flatten(params)
    us = flatten_like(treedef, updates, "the updates and the params")
    refs = flatten_like(treedef, refs_tree, "the state and the params")
    axes = layer_axes(params, mask, axis)
    keys = seeds(reference, key, len(leaves))
    if reference.kind is None:
        return _unzip(
            treedef, _no_reference_rows(axes, us, leaves), 4, refs_tree
        )
    rows = []
    for a, u, w, r, seed in zip(axes, us, leaves, refs, keys, strict=True):
        if a is None:
            rows.append((EMPTY,) * 4)
            continue
        rows.append(sm.per_leaf(_track_leaf, (a, reference), u, w, r, seed))
    return _unzip(treedef, rows, 4, refs_tree)


def _no_reference_rows(axes: list, us: list, ws: list) -> list[tuple]:
    """Each leaf's rate, radial ratio, norm and ``EMPTY`` (no reference;
    ``EMPTY`` everywhere at the leaves that are not layers), the layers
    mapped together (:func:`_staging.map_leaves`: staged on GPUs)."""
    layers = [k for k, a in enumerate(axes) if a is not None]
    values = stg.map_leaves(
        _track_no_reference,
        [axes[k] for k in layers],
        [(us[k], ws[k]) for k in layers],
    )
    rows: list[tuple] = [(EMPTY,) * 4] * len(axes)
    for k, row in zip(layers, values, strict=True):
        rows[k] = (*row, EMPTY)
    return rows
