"""The per-leaf work and the checks of :func:`track_rotation`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import _checks as checks, _numerics as nx, _sums as sm
from layca_optax._masks import resolve_mask
from layca_optax._numerics import Axis
from layca_optax.monitor._rotation_sums import (
    cosine_from_sums,
    drop_reduced,
    metric_sums,
    sketch,
    tan_from_parts,
    tangent_parts,
)


REFERENCES = ["exact", "bfloat16", "sketch"]
EMPTY = optax.MaskedNode()


def _applied(w: jax.Array, u: jax.Array) -> jax.Array:
    """``w + u`` in ``w``'s dtype, as ``optax.apply_updates`` gives it."""
    return jnp.asarray(w + u).astype(w.dtype)


def _update_sums(w: jax.Array, u: jax.Array, new: jax.Array, axes) -> dict:
    """``ww = <w, w>``, ``uw = <u, w>``, ``uu = <u, u>`` and ``nn = <new,
    new>`` (``new = w + u`` as ``optax.apply_updates`` gives it)."""
    dtype = nx.reduction_dtype(jnp.result_type(u, w))
    w, u, new = w.astype(dtype), u.astype(dtype), new.astype(dtype)
    return sm.layer_sums(axes, ww=(w, w), uw=(u, w), uu=(u, u), nn=(new, new))


def _update_metrics(ww, uw, uu, nn, ref_sums=None) -> tuple:
    """Per layer: rate, radial ratio, norm and (with ref sums) cosine."""
    nw, k, tangential = tangent_parts(ww, uw, uu)
    radial = jnp.abs(k) * nw  # |<u, w>| / ||w||
    floor = nx.machine_eps(jnp.result_type(ww)) * radial
    ratio = sm.ratio(radial, jnp.maximum(tangential, floor))
    ratio = ratio + sm.nan_if_nonfinite(ww, uu)
    rate = tan_from_parts(nw, k, tangential, ww, uu, nn)
    if ref_sums is None:
        return rate, ratio, jnp.sqrt(nn)
    return rate, ratio, jnp.sqrt(nn), cosine_from_sums(**ref_sums)


def track_leaf_fn(static: tuple, u: Any, w: Any, ref: Any, seed: Any) -> tuple:
    """Rate, radial ratio, norm and (with a reference) cosine of one leaf;
    ``static`` is ``(axes, reference axes, reference, sketch_dim)``."""
    axes, ref_axes, reference, sketch_dim = static
    u, w = jnp.asarray(u), jnp.asarray(w)
    new = _applied(w, u)
    sums = _update_sums(w, u, new, axes)
    if reference is None:
        out = _update_metrics(**sums)
    else:
        if reference == "sketch":
            new = sketch(new, seed, sketch_dim)
        ref_sums = metric_sums(new, ref, ref_axes)
        out = _update_metrics(**sums, ref_sums=ref_sums)
    return tuple(drop_reduced(x, axes) for x in out)


def check_args(axis: Axis, reference: Any, sketch_dim: Any, key: Any) -> None:
    """``ValueError`` naming ``track_rotation``'s argument for a bad
    ``axis``, ``reference``, ``sketch_dim`` or ``key``."""
    nx.check_axis(axis)
    if reference is not None and reference not in REFERENCES:
        raise ValueError(
            f"{checks.arg('reference')} must be None, 'exact', 'bfloat16' "
            f"or 'sketch', got {reference!r}."
        )
    checks.check_count(sketch_dim, "sketch_dim")
    if reference == "sketch" and axis is not None:
        raise ValueError(
            f"{checks.arg('axis')} must be None with reference='sketch', "
            f"got {axis!r}."
        )
    if key is not None:
        checks.check_key(key)


def unzip(treedef: Any, rows: list, n: int, empty: Any) -> list[Any]:
    """Per-leaf rows of ``n`` values -> ``n`` trees (``empty`` if no leaf)."""
    if not rows:
        return [empty] * n
    return [treedef.unflatten(col) for col in zip(*rows, strict=True)]


def flatten_up_to(treedef: Any, tree: Any, name: str) -> list[Any]:
    """The subtrees of ``tree`` at the leaves of ``treedef``, or ValueError."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`{checks.caller()}`: the {name} and the params differ in "
            f"structure: {err}"
        ) from None


def flags_of(params: Any, n: int, mask: optax.MaskOrFn) -> list[bool]:
    """Whether each of the ``n`` leaves of ``params`` is a layer."""
    if not n:  # optax.tree.map_params' placeholder, or no leaves at all
        return []
    return jax.tree.leaves(resolve_mask(mask, params))


def layer_axes(params: Any, flags: list[bool], axis: Axis) -> list:
    """Each leaf's reduction axes for ``axis`` (per-leaf rules see the
    leaf's path), ``None`` at leaves that are not layers."""
    if not flags:
        return []
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    rules = nx.axis_rules(params, axis)
    return [
        nx.resolve_axes(x, rule, path) if flag else None
        for (path, x), rule, flag in zip(flat, rules, flags, strict=True)
    ]
