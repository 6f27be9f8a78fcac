"""A brake on the outward radial part of any optimizer's update."""

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


def _leaf_sums(axes, u, w) -> dict:
    dtype = sm.reduction_dtype(jnp.result_type(u, w))
    uf, wf = u.astype(dtype), w.astype(dtype)
    return sm.layer_sums(axes, uw=(uf, wf), ww=(wf, wf))


def _coefficients(sums: dict, factor) -> tuple:
    """``(1 - factor) max(<u, w>, 0) / ||w||^2``: what is taken off ``u``
    along ``w``."""
    return ((1 - factor) * sm.ratio(jnp.maximum(sums["uw"], 0), sums["ww"]),)


def _apply(axes, coefficients: tuple, u, w, factor) -> jax.Array:
    del axes, factor
    dtype = sm.reduction_dtype(jnp.result_type(u, w))
    (brake,) = coefficients
    return (u.astype(dtype) - brake * w.astype(dtype)).astype(u.dtype)


@stg.staged(stg.Stages(_leaf_sums, stg.scalar_args, _coefficients, _apply))
def _leaf(axes, u, w, factor):
    """``u - (1 - factor) max(<u, w>, 0) / ||w||^2 w`` for one leaf (staged
    on GPUs: :func:`_staging.map_leaves`)."""
    coefficients = _coefficients(_leaf_sums(axes, u, w), factor)
    return _apply(axes, coefficients, u, w, factor)


@checks.public
def radial_brake(
    factor: jax.typing.ArrayLike = 0.0, *, axis: Axis = None
) -> optax.GradientTransformation:
    r"""Scales the outward radial part of each layer's update by ``factor``.

    With :math:`u` an update of the layer :math:`w` (as
    ``optax.apply_updates`` adds it) and :math:`r = \langle u, w\rangle /
    \lVert w\rVert^2`:

    .. math::

      u \leftarrow u - (1 - c)\,\max(r, 0)\, w,

    so the part of :math:`u` along :math:`w` is multiplied by :math:`c` =
    ``factor`` when it points outward (it would grow the layer's norm), and
    the inward radial part and the tangential part are left alone. It
    brakes the norm growth that adaptive optimizers give layers followed by
    a normalization (where only the direction matters and a growing norm
    lowers the effective learning rate), without constraining the norm as
    Layca or Hyperball do: weight decay can still shrink it. As NVIDIA
    Emerging-Optimizers' RadialBrake. Put it last, after the optimizer
    (``optax.chain(optax.adamw(1e-3), radial_brake(0.0))``), on the layers
    only (``optax.masked``); ``factor=1`` is the identity.

    A zero layer is left alone (it has no radial direction). Cost: one
    reduction pass over ``u`` and ``w`` (two sums per layer, in at least
    float32) and one elementwise pass. In XLA's H100 program of a whole
    step (``benchmarks/gpu_cost.py --only adamw adamw_brake``), AdamW +
    brake moves 10 arrays per step on a ``(50257, 768)`` layer against
    AdamW's 7: the brake's two passes add three. Its layers are staged on
    GPUs (as Layca's, see docs/performance.md): 104 kernels on 48
    ``(1024, 1024)`` layers against AdamW's 50.

    Args:
      factor: :math:`c \in [0, 1]`, what is kept of the outward radial
        part: 0 removes it, 1 keeps it.
      axis: axes each layer's norm reduces over (see :data:`Axis`).

    Returns:
      A stateless :class:`optax.GradientTransformation` that needs
      ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> tx = layca_optax.radial_brake(0.5)
      >>> w = jnp.array([[1.0, 0.0]])
      >>> out, _ = tx.update(jnp.array([[2.0, 3.0]]), tx.init(w), w)
      >>> out  # outward: halved; tangential: kept
      Array([[1., 3.]], dtype=float32)
      >>> out, _ = tx.update(jnp.array([[-2.0, 3.0]]), tx.init(w), w)
      >>> out  # inward: kept
      Array([[-2.,  3.]], dtype=float32)
    """
    ax.check_axis(axis)
    checks.check_scalar(factor, "factor", low=0.0, high=1.0)
    return stg.stateless_map_layers(_leaf, axis, shared=(factor,))
