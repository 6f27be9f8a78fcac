"""Rotation-based normalization: each layer's update gets its weights' norm."""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics as nx, _sums as sm
from layca_optax._numerics import Axis


_PAIRS = ((0, 0), (1, 1))  # <u, u>, <w, w>


def _request(u: jax.Array, w: jax.Array, axis: Axis) -> sm.SumsRequest:
    axes = nx.resolve_axes(w, axis, "normalize_to_param_norm")
    return sm.SumsRequest((u, w), _PAIRS, axes, nx.reduction_dtype(u.dtype))


def _normalize_leaf(
    u: jax.Array, w: jax.Array, sums: sm.LayerSums, eps: jax.typing.ArrayLike
) -> jax.Array:
    # The sums are of u / s_u and w / s_w (s = 1 unless rescaled).
    uu, ww = sums.values
    s_u, s_w = sums.scale
    u_norm = nx.safe_sqrt(uu) * s_u
    ratio = nx.safe_div(nx.safe_sqrt(ww) * s_w, nx.safe_sqrt(uu))
    scale = jnp.where(u_norm <= eps, 0, ratio)
    out = (u.astype(uu.dtype) * sums.inv_scale[0]) * scale
    return sm.propagate_nan(sums.values, out).astype(u.dtype)


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
      >>> out, _ = tx.update(jnp.array([[0.0, 0.1]]), tx.init(w), w)
      >>> out
      Array([[0., 5.]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019.
    """
    nx.check_axis(axis, "normalize_to_param_norm")
    nx.check_scalar(eps, "normalize_to_param_norm", "eps", low=0.0)
    return sm.stateless_map_with_sums(
        "normalize_to_param_norm",
        ft.partial(_request, axis=axis),
        ft.partial(_normalize_leaf, eps=eps),
    )
