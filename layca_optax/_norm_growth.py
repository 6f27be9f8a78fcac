"""A cap on each layer's norm growth per step (the authors' LARS trick)."""

from __future__ import annotations

from typing import Any, NamedTuple

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


class CapNormGrowthState(NamedTuple):
    """State of :func:`cap_norm_growth`: each layer's initial norm."""

    initial_norms: Any  # ||w_0|| per layer (kept dims), like the params


def _norm_leaf(axes: tuple[int, ...], w: jax.Array, _: jax.Array) -> jax.Array:
    """The norm of each layer of ``w`` (per-layer values, as in ``_sums``)."""
    wf = w.astype(sm.reduction_dtype(w.dtype))
    return jnp.sqrt(sm.layer_sums(axes, ww=(wf, wf))["ww"])


def _cap_leaf(axes, u, w, n0, max_growth):
    dtype = sm.reduction_dtype(u.dtype)
    uf, wf = u.astype(dtype), w.astype(dtype)
    v = wf + uf
    sums = sm.layer_sums(axes, vv=(v, v), ww=(wf, wf))
    nv, nw = jnp.sqrt(sums["vv"]), jnp.sqrt(sums["ww"])
    growth = max_growth * n0.astype(dtype)
    capped = nv - nw > growth  # never true for nv == 0
    new = v * sm.ratio(nw + growth, nv)
    return jnp.where(capped, new - wf, uf).astype(u.dtype)


@checks.public
def cap_norm_growth(
    max_growth: jax.typing.ArrayLike = 1e-4, *, axis: Axis = None
) -> optax.GradientTransformation:
    r"""Caps how much each layer's norm may grow in one step.

    The authors' "trick for preventing the norm of weights from increasing
    too much" in their LARS-equivalent variant: with :math:`w' = w + u`,

    .. math::

      w' \leftarrow \frac{w'}{\lVert w' \rVert}
      \left(\lVert w \rVert + c \lVert w_0 \rVert\right)
      \quad \text{if } \lVert w' \rVert - \lVert w \rVert > c \lVert w_0 \rVert,

    with :math:`c` = ``max_growth`` and :math:`\lVert w_0 \rVert` the norm
    of the params given to ``init``, kept in the state. The direction of
    :math:`w'` is unchanged; decreases of the norm are not capped. Last in a
    chain, like :func:`reproject_to_sphere`.

    Args:
      max_growth: :math:`c \ge 0`, the largest growth per step as a fraction
        of the initial norm (the authors' ``1e-4``).
      axis: axes each norm reduces over (see :data:`Axis`).

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``, with a
      :class:`CapNormGrowthState`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> tx = layca_optax.cap_norm_growth(0.1)
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, _ = tx.update(jnp.array([[1.0, 1.0]]), tx.init(w), w)
      >>> new = optax.apply_updates(w, u)  # direction (2, 1)
      >>> round(float(jnp.linalg.norm(new)), 6)  # 1 + 0.1 * 1
      1.1

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, Appendix A.4; the authors' code
      ``Supplementary Results/LARS.py`` (first version of the paper).
    """
    if checks.checking():  # not again inside a factory that has
        checks.check_scalar(max_growth, "max_growth", low=0.0)
        ax.check_axis(axis)

    def init_fn(params):
        return CapNormGrowthState(
            stg.map_layers(_norm_leaf, axis, params, params)
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        new = stg.map_layers(
            _cap_leaf,
            axis,
            updates,
            params,
            state.initial_norms,
            shared=(max_growth,),
        )
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)
