"""Projection of an update onto the tangent space of each layer's sphere."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _staging as stg,
    _sums as sm,
)
from layca_optax._axes import Axis


def parallel_rtol(dtype: Any) -> float:
    """Tangential parts at most this fraction of the update count as zero.

    ``sqrt(32 eps)``: 2e-3 (about 0.1 degree) for float32 reductions, 8e-8
    for float64. Below it, a direction is parallel to the weights within
    the rounding of a one-pass estimate of its tangential norm (the one
    :func:`layca_optax.scale_by_layca` uses), so both paths agree.
    """
    return (32 * sm.machine_eps(dtype)) ** 0.5


def _coefficients(uu, ww, uw) -> tuple:
    """``(a_u, a_w)`` with ``u_perp = a_u u + a_w w``, per layer.

    The tangential norm^2 is ``||u||^2 - <u, w>^2 / ||w||^2`` (one pass,
    as in :func:`layca_optax.scale_by_layca`); at most ``parallel_rtol``
    of ``||u||`` counts as parallel: a zero update.
    """
    k = sm.ratio(uw, ww)
    rtol2 = parallel_rtol(jnp.result_type(uu)) ** 2
    tangent = uu - k * uw > rtol2 * uu
    nan = sm.nan_if_nonfinite(uu, ww)
    return sm.where(tangent, 1.0, 0.0) + nan, sm.where(tangent, -k, 0) + nan


def _leaf_sums(axes: tuple[int, ...], u: jax.Array, w: jax.Array) -> dict:
    dtype = sm.reduction_dtype(u.dtype)
    uf, wf = u.astype(dtype), w.astype(dtype)
    return sm.layer_sums(axes, uu=(uf, uf), ww=(wf, wf), uw=(uf, wf))


def _from_sums(sums: dict) -> tuple:
    return _coefficients(**sums)


@stg.staged(stg.Stages(_leaf_sums, stg.no_args, _from_sums, stg.combine))
def _leaf(axes: tuple[int, ...], u: jax.Array, w: jax.Array) -> jax.Array:
    """One layer's projection (staged on GPUs: :func:`_staging.map_leaves`)."""
    return stg.combine(axes, _from_sums(_leaf_sums(axes, u, w)), u, w)


@checks.public
def project_to_tangent(*, axis: Axis = None) -> optax.GradientTransformation:
    r"""Removes from each layer's update its component along its weights.

    For a layer with weights :math:`w` and update :math:`u`, returns

    .. math::

      u_\perp = u - \frac{\langle u, w \rangle}{\lVert w \rVert^2} w,

    the projection of :math:`u` onto the tangent space of the sphere of radius
    :math:`\lVert w \rVert` at :math:`w` (step 2 of Algorithm 1 of Carbonnelle
    & De Vleeschouwer). A small step along :math:`u_\perp` rotates the layer
    without changing its norm to first order.

    Degenerate layers, documented policy:

    * a zero-norm layer has every direction tangent: its update is returned
      unchanged;
    * an update parallel to the weights gives a zero update. "Parallel" means
      the projected norm is at most ``sqrt(32 eps)`` times the input norm,
      with ``eps`` the machine epsilon of the reduction dtype (float32 for
      bf16, f16 and f32 leaves): 2e-3, i.e. within about 0.1 degree; below
      that the tangential part is not resolved by one-pass float32
      reductions (see :func:`layca_optax.scale_by_layca`);
    * a zero update stays zero.

    Reductions run in at least float32; the result has the update's dtype.
    Apply it to layers only (wrap it in :func:`optax.masked`), or let
    :func:`layca_optax.layca` do the masking.

    Args:
      axis: axes each norm reduces over; ``None`` (default) treats each whole
        leaf as one layer. See :data:`layca_optax.Axis`.

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> tx = layca_optax.project_to_tangent()
      >>> w = {"kernel": jnp.array([[1.0, 0.0], [0.0, 0.0]])}
      >>> u = {"kernel": jnp.array([[2.0, 3.0], [0.0, 0.0]])}
      >>> out, _ = tx.update(u, tx.init(w), w)
      >>> out["kernel"]
      Array([[0., 3.],
             [0., 0.]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019.
    """
    ax.check_axis(axis)
    return stg.stateless_map_layers(_leaf, axis)
