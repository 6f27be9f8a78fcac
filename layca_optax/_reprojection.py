"""Reprojection of the updated weights onto each layer's sphere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from layca_optax import _axes as ax, _checks as checks, _sums as sm
from layca_optax._axes import Axis


def _coefficients(vv, ww, uu) -> tuple:
    """``(a_v, a_w)`` with ``u' = a_v (w + u) + a_w w``, per layer: ``||w||
    / ||w + u||`` and -1, or 0 and 0 when ``w + u = 0`` or ``u = 0`` (then
    exactly no update: ``||w + u||`` and ``||w||``, summed in different
    fusions, may differ in the last bit)."""
    moved = (vv > 0) & (uu > 0)
    ok = moved & (ww > 0)  # roots of 1 elsewhere: finite gradients
    nan = sm.nan_if_nonfinite(vv, ww, uu)
    ratio = jnp.sqrt(sm.where(ok, ww, 1) / sm.where(ok, vv, 1))
    return sm.where(ok, ratio, 0) + nan, sm.where(moved, -1.0, 0) + nan


def _leaf(axes: tuple[int, ...], u: jax.Array, w: jax.Array) -> jax.Array:
    dtype = sm.reduction_dtype(u.dtype)
    wf, uf = w.astype(dtype), u.astype(dtype)
    v = wf + uf
    sums = sm.layer_sums(axes, vv=(v, v), ww=(wf, wf), uu=(uf, uf))
    a_v, a_w = _coefficients(**sums)
    return (a_v * v + a_w * wf).astype(u.dtype)


@checks.public
def reproject_to_sphere(*, axis: Axis = None) -> optax.GradientTransformation:
    r"""Turns an update into one that leaves each layer's weight norm unchanged.

    For weights :math:`w` and update :math:`u`, returns

    .. math::

      u' = \lVert w \rVert \frac{w + u}{\lVert w + u \rVert} - w,

    so that ``optax.apply_updates`` gives :math:`w + u'`, the point
    :math:`w + u` pulled back radially onto the sphere of radius
    :math:`\lVert w \rVert` (step 5 of Algorithm 1). As in the authors' code,
    the radius is the norm *before* this step (no state is kept), so the norm
    is constant up to float rounding (drift below 1e-4 relative after 10,000
    float32 steps; see the tests). The angle turned is that of :math:`w + u`.

    Degenerate layers: if :math:`w + u = 0` the update is zero (the layer stays
    where it was); a zero-norm layer gets ``-w = 0``, i.e. no update.

    .. warning::
      This must be the **last** transformation of a chain: anything after it
      changes the update and the weights leave their sphere.

    Args:
      axis: axes each norm reduces over; ``None`` (default) treats each whole
        leaf as one layer. See :data:`layca_optax.Axis`.

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> tx = layca_optax.reproject_to_sphere()
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, _ = tx.update(jnp.array([[0.0, 1.0]]), tx.init(w), w)
      >>> optax.apply_updates(w, u)  # norm 1, turned by 45 degrees
      Array([[0.70710677, 0.70710677]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019.
    """
    ax.check_axis(axis)
    return sm.stateless_map_layers(_leaf, axis)
