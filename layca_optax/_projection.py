"""Projection of an update onto the tangent space of each layer's sphere."""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics as nx
from layca_optax._numerics import Axis


# A projected update no larger than this many machine epsilons of the input's
# norm is rounding noise: the input was parallel to the weights.
PARALLEL_RTOL_ULPS = 8.0


def _project_leaf(u: jax.Array, w: jax.Array, axis: Axis) -> jax.Array:
    axes = nx.resolve_axes(w, axis, "project_to_tangent")
    dtype = nx.reduction_dtype(u.dtype)
    uf, wf = u.astype(dtype), w.astype(dtype)
    ww = nx.layer_sum(wf * wf, axes)
    uu = nx.layer_sum(uf * uf, axes)
    t = uf - nx.safe_div(nx.layer_sum(uf * wf, axes), ww) * wf
    tt = nx.layer_sum(t * t, axes)
    rtol = PARALLEL_RTOL_ULPS * nx.machine_eps(dtype)
    parallel = tt <= (rtol * rtol) * uu
    return jnp.where(parallel, 0, t).astype(u.dtype)


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
      the projected norm is at most ``8 * eps`` times the input norm, with
      ``eps`` the machine epsilon of the reduction dtype (float32 for bf16,
      f16 and f32 leaves): below that it is rounding noise;
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
    nx.check_axis(axis, "project_to_tangent")

    def update_fn(updates, state, params=None):
        if params is None:
            raise nx.no_params_error("project_to_tangent")
        fn = ft.partial(_project_leaf, axis=axis)
        return jax.tree.map(fn, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
