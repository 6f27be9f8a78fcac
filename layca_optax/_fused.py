"""Layca's per-layer step in one reduction pass and one elementwise pass."""

from __future__ import annotations

import functools as ft
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics as nx, _sums as sm
from layca_optax._multipliers import (
    Multipliers,
    check_multipliers,
    layer_factors,
)
from layca_optax._numerics import Axis
from layca_optax._projection import parallel_rtol


_PAIRS = ((0, 0), (1, 0), (1, 1))  # <w, w>, <d, w>, <d, d>


class ScaleByLaycaState(NamedTuple):
    """State of :func:`scale_by_layca`: the step count, for schedules."""

    count: jax.Array  # type: ignore[assignment]  # shape=(), int32


def _request(
    d: jax.Array, w: jax.Array, axis: Axis, exact: bool
) -> sm.SumsRequest:
    axes = nx.resolve_axes(w, axis, "layca")
    dtype = nx.reduction_dtype(jnp.result_type(d, w))
    return sm.SumsRequest((w, d), _PAIRS, axes, dtype, exact=exact)


def _layca_leaf(
    d: jax.Array, w: jax.Array, sums: sm.LayerSums, eta: Any, *, eps: Any
) -> jax.Array:
    """The update ``w_{t+1} - w`` of one layer, from the direction ``d``.

    One multi-output reduction gives ||w||^2, <d, w> and ||d||^2. The
    tangential part of ``d`` has norm^2 ||d||^2 - <d, w>^2 / ||w||^2; the
    step ``s = c (d - k w)`` with ``k = <d, w> / ||w||^2`` and ``c = eta
    ||w|| / ||d_perp||`` is tangent and has length ``eta ||w||``, so ``w - s``
    has norm ``||w|| sqrt(1 + eta^2)`` and the reprojection is a division by
    ``sqrt(1 + eta^2)``. The update is then ``a_w w + a_d d``: one pass.

    The sums are of ``w / s_w`` and ``d / s_d`` (``s = 1`` unless they would
    overflow or underflow; see :func:`layca_optax._sums.layer_sums`):
    the coefficients are invariant to those scales but for the threshold,
    on ``eta ||d_perp|| = eta s_d perp``, and ``a_d``, which multiplies
    ``d / s_d``.
    """
    dtype = sums.values[0].dtype
    wf, df = w.astype(dtype), d.astype(dtype)
    ww, dw, dd = sums.values
    s_w, s_d = sums.scale
    eta = jnp.asarray(eta, dtype)
    k = nx.safe_div(dw, ww)
    perp2 = jnp.maximum(dd - k * dw, 0)
    perp = nx.safe_sqrt(perp2)
    skip = (
        (eta * perp * s_d <= eps)  # the authors' threshold on the scaled step
        | (perp2 <= parallel_rtol(dtype) ** 2 * dd)  # parallel to w
        | (ww == 0)
    )
    c = nx.safe_div(eta * nx.safe_sqrt(ww), perp)
    root = jnp.sqrt(1 + eta * eta)
    a = 1 / root
    a_minus_1 = -(eta * eta) / (root * (1 + root))  # a - 1, no cancellation
    # A non-finite entry in d or w (or, without exact_range, a sum that
    # overflowed): a NaN update.
    nan = ~jnp.isfinite(ww + dd)
    a_w = jnp.where(nan, jnp.nan, jnp.where(skip, 0, a_minus_1 + a * c * k))
    a_d = jnp.where(nan, jnp.nan, jnp.where(skip, 0, -a * c * s_w))
    return (a_w * wf + a_d * (df * sums.inv_scale[1])).astype(w.dtype)


def scale_by_layca(
    learning_rate: optax.ScalarOrSchedule,
    multipliers: Multipliers = 1.0,
    *,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
    exact_range: bool = True,
) -> optax.GradientTransformation:
    r"""Layca's projection, normalization, step and reprojection, fused.

    Turns a direction :math:`d` (the gradient, or a base optimizer's
    direction) into the update that rotates each layer by exactly
    :math:`\arctan(\eta_l)`, :math:`\eta_l = \rho(t) m_l`, keeping its norm:
    the same result as the chain :func:`project_to_tangent`,
    :func:`normalize_to_param_norm`, :func:`scale_by_layer_multipliers`,
    ``optax.scale_by_learning_rate`` and :func:`reproject_to_sphere` (with
    the threshold applied to the scaled step), in one reduction pass over
    :math:`d` and :math:`w` and one elementwise pass, which is what
    :func:`layca` uses by default. The tangential norm comes from
    :math:`\lVert d\rVert^2 - \langle d, w\rangle^2/\lVert w\rVert^2`, which
    loses relative accuracy :math:`\approx \epsilon_{f32} \lVert d\rVert^2 /
    \lVert d_\perp\rVert^2` when :math:`d` is nearly parallel to :math:`w`;
    directions within about 0.1 degree (float32; see
    :func:`project_to_tangent`) of
    the weights give no update, as in :func:`project_to_tangent`.

    The reductions run in at least float32. With ``exact_range`` (the
    default), a layer whose sums of squares overflow or underflow there
    (entries beyond about 1e19 or below about 1e-19 in float32) is
    recomputed with its inputs scaled by powers of two, only in the steps
    that need it (see ``docs/robustness.md``), so the rotation and the norm
    hold for any finite magnitude. A non-finite entry in a layer's
    direction or weights makes that layer's update NaN.

    Args:
      learning_rate: :math:`\rho(t)`, a float or an optax schedule.
      multipliers: per-layer factors :math:`m_l`; see
        :func:`scale_by_layer_multipliers`.
      axis: axes each layer norm reduces over; see :data:`Axis`.
      eps: no update when :math:`\eta_l \lVert d_\perp\rVert \le` ``eps``.
      exact_range: True (default): rescue out-of-range sums as above, at
        the cost of one ``lax.cond`` per large leaf (on this project's CPU
        benchmark, about 20-30% of the step; see ``docs/performance.md``).
        False: plain sums only; then a layer with entries beyond about
        1e19 gets a NaN update (skipped by ``optax.apply_if_finite``) and
        one whose sums underflow entirely is left unchanged.

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``; put it
      last (it includes the reprojection).

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> tx = layca_optax.scale_by_layca(0.5)
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, _ = tx.update(jnp.array([[0.0, -1.0]]), tx.init(w), w)
      >>> new = optax.apply_updates(w, u)  # turned by arctan(0.5), norm 1
      >>> [round(float(x), 5) for x in new.ravel()]
      [0.89443, 0.44721]

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (Algorithm 1,
      Eq. 1). The single-reduction, single-pass form is this library's; it
      agrees with the four chained operations to rounding.
    """
    nx.check_axis(axis, "scale_by_layca")
    nx.check_scalar(eps, "scale_by_layca", "eps", low=0.0)
    nx.check_bool(exact_range, "scale_by_layca", "exact_range")
    if not callable(learning_rate):
        nx.check_scalar(learning_rate, "scale_by_layca", "learning_rate", low=0)
    check_multipliers(multipliers, None, "scale_by_layca")

    def init_fn(params):
        check_multipliers(multipliers, params, "scale_by_layca")
        return ScaleByLaycaState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise nx.no_params_error("scale_by_layca")
        if callable(learning_rate):
            lr = learning_rate(state.count)
        else:
            lr = learning_rate
        factors = layer_factors(multipliers, updates, params, "layca")
        etas = jax.tree.map(lambda m: lr * m, factors)
        new = sm.map_with_sums(
            ft.partial(_request, axis=axis, exact=exact_range),
            ft.partial(_layca_leaf, eps=eps),
            updates,
            params,
            etas,
        )
        count = optax.safe_increment(state.count)
        return new, ScaleByLaycaState(count)

    return optax.GradientTransformation(init_fn, update_fn)
