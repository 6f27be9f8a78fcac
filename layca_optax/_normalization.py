"""Rotation-based normalization: each layer's update gets its weights' norm."""

from __future__ import annotations

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


def _coefficients(uu, ww, *, eps: jax.typing.ArrayLike) -> tuple:
    """``||w|| / ||u||`` per layer, 0 when ``||u|| <= eps``."""
    ok = (uu > eps * eps) & (ww > 0)  # roots of 1 elsewhere: finite grads
    # A ratio of roots: the ratio of squares can leave the float range.
    ratio = jnp.sqrt(sm.where(ok, ww, 1)) / jnp.sqrt(sm.where(ok, uu, 1))
    return (sm.where(ok, ratio, 0) + sm.nan_if_nonfinite(uu, ww),)


def _leaf_sums(axes: tuple[int, ...], u: jax.Array, w: jax.Array) -> dict:
    dtype = sm.reduction_dtype(u.dtype)
    uf, wf = u.astype(dtype), w.astype(dtype)
    return sm.layer_sums(axes, uu=(uf, uf), ww=(wf, wf))


def _from_sums(sums: dict, eps) -> tuple:
    return _coefficients(**sums, eps=eps)


def _apply(axes: tuple[int, ...], coefficients: tuple, u, w, eps) -> jax.Array:
    del w, eps
    (scale,) = coefficients
    return (u.astype(sm.reduction_dtype(u.dtype)) * scale).astype(u.dtype)


@stg.staged(stg.Stages(_leaf_sums, stg.scalar_args, _from_sums, _apply))
def _leaf(axes: tuple[int, ...], u: jax.Array, w: jax.Array, eps) -> jax.Array:
    """One layer's rescaling (staged on GPUs: :func:`_staging.map_leaves`)."""
    return _apply(axes, _from_sums(_leaf_sums(axes, u, w), eps), u, w, eps)


@checks.public
def normalize_to_param_norm(
    *, axis: Axis = None, eps: jax.typing.ArrayLike = 1e-7
) -> optax.GradientTransformation:
    r"""Rescales each layer's update to the norm of the layer's weights.

    The rotation-based normalization of Layca (step 3 of Algorithm 1):

    .. math::

      u \leftarrow
      \begin{cases}
        0 & \text{if } \lVert u \rVert \le \epsilon, \\
        u \, \lVert w \rVert / \lVert u \rVert & \text{otherwise.}
      \end{cases}

    After :func:`layca_optax.project_to_tangent`, a step
    :math:`w - \eta u` then turns the layer by exactly
    :math:`\arctan(\eta)`, whatever the gradient's scale.

    The threshold is absolute, as in the authors' code (``1e-7``). There it is
    applied to the *learning-rate-scaled* step; :func:`layca_optax.layca`
    reproduces that by scaling the step before this transformation. Used alone
    on a raw direction, ``eps`` applies to that direction's norm. A zero-norm
    layer gets a zero update. Reductions run in at least float32; the result
    has the update's dtype.

    Args:
      axis: axes each norm reduces over; ``None`` (default) treats each whole
        leaf as one layer. See :data:`layca_optax.Axis`.
      eps: updates with norm at or below ``eps`` become zero. Non-negative.

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> tx = layca_optax.normalize_to_param_norm()
      >>> w = jnp.array([[3.0, 4.0]])  # norm 5
      >>> out, _ = tx.update(jnp.array([[0.0, 0.5]]), tx.init(w), w)
      >>> out
      Array([[0., 5.]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019.
    """
    ax.check_axis(axis)
    checks.check_scalar(eps, "eps", low=0.0)
    return stg.stateless_map_layers(_leaf, axis, shared=(eps,))
