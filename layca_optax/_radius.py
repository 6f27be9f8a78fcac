"""A fixed radius per layer: the ``radius`` argument, its checks, its state.

``radius`` (of :func:`~layca_optax.reproject_to_sphere`,
:func:`~layca_optax.hyperball`, :func:`~layca_optax.layca` and
:func:`~layca_optax.scale_by_layca`) is None (keep each layer's norm), a
positive number, a prefix tree of the params with positive numbers (or,
with ``axis``, arrays of one radius per slice) at its leaves, or a callable
of the initial params returning such a tree. A callable is called once, at
``init``, and its radii are kept in the state (:class:`ReprojectToSphereState`,
checkpointed with it); numbers and trees are constants of the
transformation (a number injected by ``optax.inject_hyperparams`` is a
hyperparameter: its new value applies at the next step).

A step lands each nonzero layer on its radius by one per-layer factor
:math:`\\rho = R / \\lVert w\\rVert` applied to the norm-keeping step's new
weights (:func:`onto_radius`): per-layer scalars only, no array more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _axes as ax, _checks as checks, _sums as sm
from layca_optax._masks import path_str


Radius: TypeAlias = None | float | jax.Array | Any | Callable[[Any], Any]
"""Each layer's radius: None (keep its norm), a positive number, a prefix
tree of the params with positive numbers or per-slice arrays at its
leaves, or a callable of the initial params returning such a tree."""


class ReprojectToSphereState(NamedTuple):
    """The radii that a callable ``radius`` gave at ``init``, per leaf of
    the params (a scalar, or one radius per slice with the reduced axes
    kept as 1), in at least float32: the state of
    :func:`reproject_to_sphere` and the second part of
    :func:`scale_by_layca`'s with such a radius."""

    radius: Any


def _bad(detail: str) -> ValueError:
    return ValueError(
        f"{checks.arg('radius')} must be None, a positive number, a prefix "
        "tree of the params with positive numbers (or, with `axis`, arrays "
        "of one radius per slice) at its leaves, or a callable of the "
        f"initial params returning such a tree; {detail}"
    )


def _check_values(tree: Any) -> None:
    """Positive finite numbers, or arrays of them, where concrete."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise _bad(f"got {tree!r}, which holds no radius.")
    for r in leaves:
        if isinstance(r, str | bytes | bool | np.bool_) or not (
            isinstance(r, int | float) or hasattr(r, "dtype")
        ):
            raise _bad(f"got {r!r}.")
        if not jnp.issubdtype(jnp.result_type(r), jnp.number) or (
            jnp.issubdtype(jnp.result_type(r), jnp.complexfloating)
        ):
            raise _bad(f"got an array of dtype {jnp.result_type(r)}.")
        if not checks.is_concrete(r):
            continue
        values = np.asarray(r, np.float64)
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            shown = values if values.size <= 4 else values.ravel()[:4]
            raise _bad(f"got {shown} (each radius finite and > 0).")


def check_radius(radius: Radius) -> None:
    """``ValueError`` naming ``caller(radius=...)`` for a radius that is
    not None, a callable, or a tree of positive finite numbers (checked
    where concrete; the structure is checked at ``init``)."""
    if radius is None or callable(radius):
        return
    _check_values(radius)


def _broadcast(radius: Any, params: Any) -> list[Any]:
    """The radius of each leaf of ``params`` (leaf order)."""
    try:
        tree = jax.tree.map(
            lambda r, sub: jax.tree.map(lambda _: r, sub), radius, params
        )
    except ValueError as err:
        raise _bad(
            f"its structure is not a prefix of the params' ({err})."
        ) from None
    return jax.tree.leaves(tree)


def leaf_radius(axes: tuple[int, ...], w: Any, r: Any) -> Any:
    """``r`` (a number, or one radius per slice of ``w`` with or without
    the reduced axes) in the shape of ``w``'s per-layer sums, or
    ``ValueError``."""
    if r is None or not np.ndim(r):
        return r
    shape = tuple(1 if a in axes else n for a, n in enumerate(np.shape(w)))
    if not sm.keep_dims(axes, np.ndim(w)):
        shape = ()
    kept = tuple(n for a, n in enumerate(np.shape(w)) if a not in axes)
    if np.shape(r) == shape:
        return r
    if np.shape(r) == kept:
        return jnp.reshape(r, shape)
    raise _bad(
        f"got an array of shape {np.shape(r)} for a leaf of shape "
        f"{np.shape(w)} whose layers reduce over axes {axes}: one radius "
        f"per layer is a number or an array of shape {kept} (or {shape})."
    )


def _guard(r: Any) -> Any:
    """A traced radius (``inject_hyperparams``, a callable traced at
    ``init``) that is not positive and finite becomes NaN, so that the
    updates are NaN instead of silently wrong."""
    if checks.is_concrete(r):
        return r
    return jnp.where((r > 0) & (r < jnp.inf), r, jnp.nan)


def _resolved(radius: Any, params: Any, axis: Any, cast: bool) -> list[Any]:
    """Each leaf's radius, checked against its leaf (shape and values)."""
    _check_values(radius)
    radii = _broadcast(radius, params)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = []
    for (path, w), axes, r in zip(
        flat, ax.axes_per_leaf(params, axis), radii, strict=True
    ):
        try:
            r = leaf_radius(axes, w, r)
        except ValueError as err:
            raise ValueError(f"{err} (at {path_str(path)!r})") from None
        if cast:
            dtype = sm.reduction_dtype(jnp.result_type(w))
            r = jnp.asarray(r, dtype)
        out.append(_guard(r))
    return out


def init_radius(radius: Radius, params: Any, axis: Any) -> Any:
    """At ``init``: the radii of a callable ``radius`` as a tree of the
    params' structure (None for a number or a tree, whose structure and
    shapes are checked here)."""
    if radius is None or not jax.tree.leaves(params):
        return None
    if not callable(radius):
        _resolved(radius, params, axis, cast=False)
        return None
    try:
        tree = radius(params)
    except Exception as err:  # noqa: BLE001 (any error of the user's code)
        raise _bad(
            f"calling it with the params failed: {type(err).__name__}: {err}"
        ) from err
    treedef: Any = jax.tree.structure(params)
    return treedef.unflatten(_resolved(tree, params, axis, cast=True))


def layer_radii(radius: Radius, stored: Any, updates: Any) -> Any:
    """At ``update``: each leaf's radius, a tree of ``updates``' structure
    (the callable's from ``stored``, the state's radii); None for no
    radius."""
    if radius is None or callable(radius):
        return stored
    treedef: Any = jax.tree.structure(updates)
    return treedef.unflatten([_guard(r) for r in _broadcast(radius, updates)])


def onto_radius(ww: Any, radius: Any, c_w: Any, c_u: Any) -> tuple:
    """``(c_w', c_u')`` such that ``w + c_w' w + c_u' u = rho (w + c_w w +
    c_u u)``, ``rho = R / ||w||`` (``ww = ||w||^2``): a step that keeps the
    norm, scaled onto the radius ``R``. ``rho - 1`` is computed as ``(R -
    ||w||) / ||w||``, without cancellation; a zero layer is left as it is
    (``rho = 1``: it has no direction to scale)."""
    nonzero = ww > 0
    root = jnp.sqrt(sm.where(nonzero, ww, 1))
    radius = jnp.asarray(radius, jnp.result_type(ww))
    rho = sm.where(nonzero, radius / root, 1)
    rho_minus_1 = sm.where(nonzero, (radius - root) / root, 0)
    return rho * c_w + rho_minus_1, rho * c_u
