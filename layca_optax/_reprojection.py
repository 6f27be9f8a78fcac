"""Reprojection of the updated weights onto each layer's sphere."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _radius as rd,
    _staging as stg,
    _sums as sm,
)
from layca_optax._axes import Axis
from layca_optax._radius import Radius, ReprojectToSphereState


def _coefficients(vv, ww, uu, wu) -> tuple:
    """``(c_w, c_u)`` with ``u' = c_w w + c_u u``, per layer: ``r - 1`` and
    ``r`` for ``r = ||w|| / ||w + u||``, or 0 and 0 when ``w + u = 0``, -1
    and 0 for a zero layer. ``u = 0`` gives ``g = 0``, so ``-0`` and 1:
    exactly no update (``||w + u||`` and ``||w||``, summed in different
    fusions, may differ in the last bit, which ``g`` never sees). An
    update whose squares underflow (``<u, u> = 0``, entries below about
    1e-19 in float32: a turn by 1e-6 of a layer of entries 1e-15) is
    still applied, to first order (the norm's change, ``<u, u> / 2``, is
    below the rounding of ``w + u``); it used to be dropped.

    ``r^2 = 1 / (1 + g)`` with ``g = (2 <w, u> + <u, u>) / <w, w>`` (the
    update's size relative to the layer): the rounding of ``<w, w>`` enters
    the new norm only through ``g``, and ``r - 1`` is computed without
    cancellation, so a step changes the norm by a few roundings of ``g``
    times ``eps``, not of ``eps`` (10,000 float32 steps drifted by 1e-4 with
    ``sqrt(<w, w> / <w + u, w + u>)``). Where ``w + u`` is much shorter
    than ``w`` (``1 + g < 1/2``: ``g`` cancels) or much longer (``g >= 3``,
    where ``g`` could overflow), ``<w + u, w + u>`` is used.
    """
    moved = vv > 0
    ok = moved & (ww > 0)  # roots of 1 elsewhere: finite gradients
    nan = sm.nan_if_nonfinite(vv, ww, uu, wu)
    g = (2 * wu + uu) / sm.where(ok, ww, 1)
    near = ok & (g > -0.5) & (g < 3)  # ||w + u|| in [0.7, 2] ||w||
    s = jnp.sqrt(1 + sm.where(near, g, 0))
    far = jnp.sqrt(sm.where(ok, ww, 1) / sm.where(ok, vv, 1))
    r_minus_1 = sm.where(near, -g / (s * (1 + s)), far - 1)
    zero_layer = sm.where(moved, -1.0, 0).astype(ww.dtype)
    c_w = sm.where(ok, r_minus_1, zero_layer)
    c_u = sm.where(ok, sm.where(near, 1 / s, far), 0)
    return c_w + nan, c_u + nan


def _leaf_sums(axes: tuple[int, ...], u: jax.Array, w: jax.Array) -> dict:
    dtype = sm.reduction_dtype(u.dtype)
    wf, uf = w.astype(dtype), u.astype(dtype)
    v = wf + uf
    return sm.layer_sums(axes, vv=(v, v), ww=(wf, wf), uu=(uf, uf), wu=(wf, uf))


def _leaf(
    axes: tuple[int, ...], u: jax.Array, w: jax.Array, radius: Any = None
) -> jax.Array:
    """One layer's ``u'``: onto ``||w||``, or onto ``radius`` (a number or
    per-slice radii, see :func:`~layca_optax._radius.leaf_radius`)."""
    sums = _leaf_sums(axes, u, w)
    c_w, c_u = _coefficients(**sums)
    if radius is not None:
        r = rd.leaf_radius(axes, w, radius)
        c_w, c_u = rd.onto_radius(sums["ww"], r, c_w, c_u)
    return stg.combine(axes, (c_u, c_w), u, w)


def _from_sums(sums: dict) -> tuple:
    c_w, c_u = _coefficients(**sums)
    return c_u, c_w  # in stg.combine's order


@stg.staged(stg.Stages(_leaf_sums, stg.no_args, _from_sums, stg.combine))
def _leaf_onto_norm(axes: tuple[int, ...], u: jax.Array, w: jax.Array):
    """:func:`_leaf` without a radius (staged on GPUs:
    :func:`_staging.map_leaves`)."""
    return stg.combine(axes, _from_sums(_leaf_sums(axes, u, w)), u, w)


def sphere_step(axis: Axis, radius: Radius) -> optax.GradientTransformation:
    """:func:`reproject_to_sphere` without the checks of its arguments,
    which the calling factory has made (the last step of
    :func:`~layca_optax.hyperball` and of ``layca(fused=False)``)."""
    if radius is None:
        return stg.stateless_map_layers(_leaf_onto_norm, axis)

    def init_fn(params):
        stored = rd.init_radius(radius, params, axis)
        if callable(radius):
            return ReprojectToSphereState(radius=stored)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        stored = getattr(state, "radius", None)
        radii = rd.layer_radii(radius, stored, updates)
        extra = () if radii is None else (radii,)
        return stg.map_layers(_leaf, axis, updates, params, *extra), state

    return optax.GradientTransformation(init_fn, update_fn)


@checks.public
def reproject_to_sphere(
    *, axis: Axis = None, radius: Radius = None
) -> optax.GradientTransformation:
    r"""Turns an update into one that lands each layer on its sphere.

    For weights :math:`w` and update :math:`u`, returns

    .. math::

      u' = R \frac{w + u}{\lVert w + u \rVert} - w,

    so that ``optax.apply_updates`` gives :math:`w + u'`, the point
    :math:`w + u` pulled back radially onto the sphere of radius :math:`R`
    (step 5 of Algorithm 1). By default (``radius=None``) :math:`R =
    \lVert w \rVert`: as in the authors' code, the radius is the norm
    *before* this step (no state is kept), so the norm is constant up to
    float rounding (drift below 1e-6 relative after 10,000 float32 steps;
    see the tests). The angle turned is that of :math:`w + u`, whatever
    :math:`R`.

    With a fixed ``radius`` (the Hyperball family's fixed-radius mode),
    :math:`R` is that radius: every nonzero layer lands on it, also a layer
    that starts off it (it is scaled by :math:`R / \lVert w \rVert` as it
    turns) and one whose update is zero (it is only scaled). Per layer
    this adds a few scalar operations and no array
    (``tests/core/test_radius.py``).

    Degenerate layers: if :math:`w + u = 0` the layer keeps its direction
    (no update without a radius, :math:`R\, w / \lVert w \rVert - w` with
    one); a zero-norm layer gets no update (it has no direction to land
    along), with or without a radius.

    .. warning::
      This must be the **last** transformation of a chain: anything after it
      changes the update and the weights leave their sphere.

    Args:
      axis: axes each norm reduces over; ``None`` (default) treats each whole
        leaf as one layer. See :data:`layca_optax.Axis`.
      radius: ``None`` (default): keep each layer's norm. A positive
        number: every layer's radius. A prefix tree of the params with
        positive numbers at its leaves: one radius per subtree; with
        ``axis``, a leaf may also be an array of one radius per slice (the
        shape of the axes kept, e.g. ``(L,)`` for a stack ``(L, d, f)``
        with ``axis=(1, 2)``; a number is every slice's). A callable of the
        initial params returning such a tree: called once, at ``init``, its
        radii kept in the state (:class:`ReprojectToSphereState`), so that
        they are checkpointed and a resumed run keeps them, e.g.
        ``lambda p: jax.tree.map(jnp.linalg.norm, p)`` (the initial
        norms) or ``lambda p: jax.tree.map(lambda w: w.size ** 0.5, p)``
        (unit root-mean-square entries).

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``; its
      state is ``optax.EmptyState()``, or a :class:`ReprojectToSphereState`
      for a callable ``radius``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> tx = layca_optax.reproject_to_sphere()
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, _ = tx.update(jnp.array([[0.0, 1.0]]), tx.init(w), w)
      >>> optax.apply_updates(w, u)  # norm 1, turned by 45 degrees
      Array([[0.7071068 , 0.70710677]], dtype=float32)
      >>> tx = layca_optax.reproject_to_sphere(radius=2.0)
      >>> u, _ = tx.update(jnp.array([[0.0, 1.0]]), tx.init(w), w)
      >>> new = optax.apply_updates(w, u)  # norm 2, turned by 45 degrees
      >>> [round(float(x), 5) for x in new.ravel()]
      [1.41421, 1.41421]

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019.
      Wen, Dang, Lyu, Ma & Liang, Hyperball (AdamH/MuonH),
      arXiv:2606.16899 (the fixed radius).
    """
    ax.check_axis(axis)
    rd.check_radius(radius)
    return sphere_step(axis, radius)
