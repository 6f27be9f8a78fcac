"""Layca's per-layer step in one reduction pass and one elementwise pass."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _rounding as rnd,
    _sums as sm,
)
from layca_optax._axes import Axis
from layca_optax._multipliers import (
    Multipliers,
    check_multipliers,
    layer_factors,
)
from layca_optax._projection import parallel_rtol
from layca_optax._rates import layer_rates


class ScaleByLaycaState(NamedTuple):
    """State of :func:`scale_by_layca`: the step count, for schedules and
    the keys of the stochastic rounding of bfloat16 and float16 layers."""

    count: jax.Array  # type: ignore[assignment]  # shape=(), int32


def rate_terms(eta: Any, eps: Any) -> tuple[Any, Any, Any, Any]:
    """The per-rate constants of :func:`layca_coefficients`.

    ``(eps / eta)^2`` (the threshold on ``||d_perp||^2``; ``inf`` for
    ``eta <= 0``: no update), ``-a eta`` and ``a - 1`` (without
    cancellation), with ``a = 1 / sqrt(1 + eta^2)`` the reprojection's
    factor, and ``eta * 0`` (NaN for a NaN or infinite rate, which then
    makes every update NaN, as the chain's does; None for a finite static
    rate).
    Python floats when ``eta`` and ``eps`` are static (no traced
    operations), arrays otherwise.
    """
    if checks.is_concrete((eta, eps)) and jnp.ndim(eta) == 0:
        x, e = float(eta), float(eps)
        root = math.sqrt(1 + x * x)
        thresh = (e / x) ** 2 if x > 0 else math.inf
        nan = None if math.isfinite(x) else math.nan
        return thresh, -x / root, -(x * x) / (root * (1 + root)), nan
    r = jnp.sqrt(1 + eta * eta)
    positive = eta > 0
    t = jnp.where(positive, (eps / jnp.where(positive, eta, 1)) ** 2, jnp.inf)
    return t, -eta / r, -(eta * eta) / (r * (1 + r)), eta * 0


def layca_coefficients(ww, dw, dd, terms: tuple) -> tuple:
    """``(a_w, b, c)`` with ``w_{t+1} - w = a_w w + (b d) c``, per layer.

    With ``h = <d, w> / ||w||`` the direction's radial length, its
    tangential part has norm^2 ``p = ||d||^2 - h^2``; the step ``s = c' (d
    - k w)`` with ``k = <d, w> / ||w||^2`` and ``c' = eta ||w|| / sqrt(p)``
    is tangent and has length ``eta ||w||``, so ``w - s`` has norm ``||w||
    sqrt(1 + eta^2)`` and the reprojection multiplies by ``a = 1 / sqrt(1 +
    eta^2)``: ``b = 1 / sqrt(p)``, ``c = -a eta ||w||`` and ``a_w = a - 1 -
    c b k = a - 1 + a eta h / sqrt(p)``. The direction is first divided by
    its tangential norm (``b d``: entries of at most ``1 / parallel_rtol``)
    and then multiplied by ``c``: their product ``-a c'`` underflowed to 0
    for a tiny layer and a huge direction (weights of 1e-15, a direction of
    1e18). No update when ``eta sqrt(p) <= eps`` (the authors' threshold
    on the scaled step: ``p <= thresh``), when ``d`` is parallel to ``w``,
    when ``w`` is zero or when the rate is not positive; NaN coefficients
    for a layer whose sums are not finite, and for a NaN rate. See
    :func:`rate_terms`.
    """
    thresh, neg_a_eta, a_minus_1, rate_nan = terms
    rtol2 = parallel_rtol(jnp.result_type(ww)) ** 2
    # Each division and root sees 1 where its result is not used, so that
    # gradients through the update stay finite at degenerate layers.
    nonzero = ww > 0
    root_w = jnp.sqrt(sm.where(nonzero, ww, 1))
    h = sm.where(nonzero, dw / root_w, 0)  # |h| <= ||d||: no overflow
    perp2 = jnp.maximum(dd - h * h, 0)
    ok = (perp2 > thresh) & (perp2 > rtol2 * dd) & nonzero
    b = 1 / jnp.sqrt(sm.where(ok, perp2, 1))
    nan = sm.nan_if_nonfinite(ww, dw, dd)
    if rate_nan is not None:
        nan = nan + rate_nan
    a_w = sm.where(ok, a_minus_1 - neg_a_eta * (h * b), 0) + nan
    return a_w, sm.where(ok, b, 0), sm.where(ok, neg_a_eta * root_w, 0) + nan


def layca_update(coefficients: tuple, w: jax.Array, d: jax.Array):
    """``a_w w + (b d) c`` for :func:`layca_coefficients`' ``(a_w, b, c)``:
    the update ``w_{t+1} - w`` in ``w``'s (float32 or wider) dtype."""
    a_w, b, c = coefficients
    return a_w * w + (d * b) * c


def _leaf_sums(
    axes: tuple[int, ...], d: jax.Array, w: jax.Array, *_: Any
) -> dict[str, jax.Array]:
    """``ww``, ``dw`` and ``dd``: one layer's sums, in at least float32."""
    dtype = sm.reduction_dtype(jnp.result_type(d, w))
    wf, df = w.astype(dtype), d.astype(dtype)
    return sm.layer_sums(axes, ww=(wf, wf), dw=(df, wf), dd=(df, df))


def _leaf_terms(terms: tuple, key: Any) -> tuple:
    del key
    return terms


def _leaf_coefficients(sums: dict[str, jax.Array], *terms: Any) -> tuple:
    return layca_coefficients(**sums, terms=terms)


def _leaf_apply(
    axes: tuple[int, ...],
    coefficients: tuple,
    d: jax.Array,
    w: jax.Array,
    terms: tuple,
    key: jax.Array | None,
):
    """The elementwise pass of :func:`_leaf` from its coefficients."""
    del terms
    dtype = sm.reduction_dtype(jnp.result_type(d, w))
    wf, df = w.astype(dtype), d.astype(dtype)
    u = layca_update(coefficients, wf, df)
    if key is None:
        return u.astype(w.dtype)
    return rnd.rounded_update(axes, wf + u, w, key)


_STAGES = sm.Stages(_leaf_sums, _leaf_terms, _leaf_coefficients, _leaf_apply)


@sm.staged(_STAGES)
def _leaf(
    axes: tuple[int, ...],
    d: jax.Array,
    w: jax.Array,
    terms: tuple,
    key: jax.Array | None,
):
    """One layer's update ``w_{t+1} - w`` from the direction ``d``: one
    reduction pass for ``||w||^2``, ``<d, w>`` and ``||d||^2`` in at least
    float32, and one elementwise pass; ``terms`` from :func:`rate_terms`.
    With a ``key`` (bfloat16 and float16 weights), ``w_{t+1}`` is rounded
    stochastically (:func:`~layca_optax._rounding.rounded_update`). On
    GPUs every layer's coefficients are computed at once
    (:func:`_sums.map_leaves`)."""
    sums = _leaf_sums(axes, d, w)
    coefficients = _leaf_coefficients(sums, *_leaf_terms(terms, key))
    return _leaf_apply(axes, coefficients, d, w, terms, key)


@checks.public
def scale_by_layca(
    learning_rate: optax.ScalarOrSchedule,
    multipliers: Multipliers = 1.0,
    *,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
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
    \lVert d_\perp\rVert^2` when :math:`d` is nearly parallel to :math:`w`:
    at an angle :math:`\theta` between them, :math:`\tan` of the turn is
    within :math:`2 \epsilon / \sin^2\theta` of :math:`\eta_l` and the
    norm within :math:`\eta_l^2/(1 + \eta_l^2) \cdot 2\epsilon /
    \sin^2\theta` (float32: 3% and 1.7% at 0.15 degrees and
    :math:`\eta_l = 1`, 8e-4 and 4e-4 at 1 degree, 2e-7 at 90 degrees).
    Directions within about 0.1 degree (float32; see
    :func:`project_to_tangent`) of the weights give no update, as in
    :func:`project_to_tangent`.

    The reductions run in at least float32, as plain sums: one reduction
    pass and one elementwise pass (and, for bfloat16 and float16 layers,
    the rounding's below), no conditionals. They are exact to
    rounding when a layer's root-mean-square entry lies within about 1e-16
    and ``1.8e19 / sqrt(n)`` (``n`` entries: 1e-15 to 1e15 for layers up
    to 1e8 entries), in the weights and the direction. Outside: a layer
    whose sums overflow gets a NaN update (chain
    ``optax.apply_if_finite(optax.identity(), n)`` after it to skip such a
    step), one whose squares underflow gets no update,
    like a zero layer (a direction that small is below the ``eps``
    threshold anyway). A non-finite entry in a layer's direction or weights
    makes that layer's update NaN, and so does a NaN or infinite rate; a
    negative rate (a schedule's value) makes no update. See
    ``docs/robustness.md``.

    bfloat16 and float16 layers: the new weights :math:`x = w + u` are
    computed in float32 as above, then rounded *stochastically* to the
    layer's dtype (to one of the two neighbouring values, unbiased; rounding
    to nearest dropped every entry's update below half an ulp, and the
    norm drifted by several % in 1,000 steps). The bits come from the step
    count (the state's ``count``) and the leaf's index: a step is
    reproducible, also after a checkpoint restore. :math:`x` is first
    scaled per layer by :math:`\sqrt{1 - V/\lVert x\rVert^2}`, with
    :math:`V` the rounding's variance (about ``5e-6`` of
    :math:`\lVert x\rVert^2` in bfloat16), so that the expected squared
    norm is kept. The update is
    ``round(x) - w``, on which ``optax.apply_updates`` lands exactly (an
    entry that more than halves lands within an ulp of its update). The
    norm and the turn are then exact *in expectation*: each step moves a
    layer's norm by about :math:`0.52 \cdot 2^{-p}/\sqrt{n}` relative
    (:math:`p` = 7 for bfloat16, 10 for float16; :math:`n` entries per
    layer), a random walk (one standard deviation after 10,000 steps:
    0.4% for a bfloat16 layer of 10,000 entries, 4% for one of 100), and
    each step's turn carries the rounding's noise (median error 0.2% at
    ``learning_rate=3**-3`` in bfloat16, larger for smaller rates; the
    turns add up to the right rotation). ``init`` warns, naming them, for
    layers whose walk would exceed 1% in 10,000 steps: keep float32 params
    (master weights) for them. float32 and float64 layers are not
    affected (no random bits; the same update as before, bit for bit).

    Args:
      learning_rate: :math:`\rho(t)`, a float or an optax schedule.
      multipliers: per-layer factors :math:`m_l`; see
        :func:`scale_by_layer_multipliers`.
      axis: axes each layer norm reduces over; see :data:`Axis`.
      eps: no update when :math:`\eta_l \lVert d_\perp\rVert \le` ``eps``.

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
    if checks.checking():  # not when layca & co. have checked them
        ax.check_axis(axis)
        checks.check_scalar(eps, "eps", low=0.0)
        checks.check_learning_rate(learning_rate)
        check_multipliers(multipliers, None)
    rates = layer_rates(learning_rate)

    warned: list[bool] = []

    def init_fn(params):
        check_multipliers(multipliers, params)
        if jax.tree.leaves(params):  # not optax's empty placeholders
            rates.check(params)
        rnd.warn_drift(params, axis, warned)
        return ScaleByLaycaState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        factors = jax.tree.leaves(layer_factors(multipliers, updates, params))
        terms: dict[Any, tuple] = {}  # per static (rate, factor): once

        def rate(lr, m):
            key = tuple(
                x if isinstance(x, float | int) else id(x) for x in (lr, m)
            )
            if key not in terms:
                terms[key] = rate_terms(lr * m, eps)
            return terms[key]

        lrs = rates.rates(state.count, updates)
        treedef: Any = jax.tree.structure(updates)
        new = sm.map_layers(
            _leaf,
            axis,
            updates,
            params,
            treedef.unflatten(map(rate, lrs, factors)),
            rnd.leaf_keys(state.count, updates, params),
        )
        count = optax.safe_increment(state.count)
        return new, ScaleByLaycaState(count)

    return optax.GradientTransformation(init_fn, update_fn)
