"""Layca's per-layer step in one reduction pass and one elementwise pass."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _radius as rd,
    _rounding as rnd,
    _staging as stg,
    _sums as sm,
)
from layca_optax._axes import Axis
from layca_optax._layca_coefficients import (
    layca_coefficients,
    layca_update,
    rate_terms,
)
from layca_optax._multipliers import (
    Multipliers,
    check_multipliers,
    layer_factors,
)
from layca_optax._radius import Radius, ReprojectToSphereState
from layca_optax._rates import layer_rates


class ScaleByLaycaState(NamedTuple):
    """State of :func:`scale_by_layca`: the step count, for schedules and
    the keys of the stochastic rounding of bfloat16 and float16 layers."""

    count: jax.Array  # type: ignore[assignment]  # shape=(), int32


def _leaf_sums(
    axes: tuple[int, ...], d: jax.Array, w: jax.Array, *_: Any
) -> dict[str, jax.Array]:
    """``ww``, ``dw`` and ``dd``: one layer's sums, in at least float32."""
    dtype = sm.reduction_dtype(jnp.result_type(d, w))
    wf, df = w.astype(dtype), d.astype(dtype)
    return sm.layer_sums(axes, ww=(wf, wf), dw=(df, wf), dd=(df, df))


def _leaf_terms(terms: tuple, key: Any, radius: Any = None) -> tuple:
    del key
    return terms if radius is None else (*terms, radius)


def _leaf_coefficients(sums: dict[str, jax.Array], *terms: Any) -> tuple:
    """:func:`layca_coefficients`, scaled onto the radius if one follows
    the rate's terms (:func:`~layca_optax._radius.onto_radius`)."""
    a_w, b, c = layca_coefficients(**sums, terms=terms[:4])
    if len(terms) == 4:
        return a_w, b, c
    a_w, c = rd.onto_radius(sums["ww"], terms[4], a_w, c)
    return a_w, b, c


def _leaf_apply(
    axes: tuple[int, ...],
    coefficients: tuple,
    d: jax.Array,
    w: jax.Array,
    terms: tuple,
    key: jax.Array | None,
    radius: Any = None,
):
    """The elementwise pass of :func:`_leaf` from its coefficients."""
    del terms, radius
    dtype = sm.reduction_dtype(jnp.result_type(d, w))
    wf, df = w.astype(dtype), d.astype(dtype)
    u = layca_update(coefficients, wf, df)
    if key is None:
        return u.astype(w.dtype)
    return rnd.rounded_update(axes, wf + u, w, key)


_STAGES = stg.Stages(_leaf_sums, _leaf_terms, _leaf_coefficients, _leaf_apply)


@stg.staged(_STAGES)
def _leaf(
    axes: tuple[int, ...],
    d: jax.Array,
    w: jax.Array,
    terms: tuple,
    key: jax.Array | None,
    radius: Any = None,
):
    """One layer's update ``w_{t+1} - w`` from the direction ``d``: one
    reduction pass for ``||w||^2``, ``<d, w>`` and ``||d||^2`` in at least
    float32, and one elementwise pass; ``terms`` from :func:`rate_terms`.
    With a ``key`` (bfloat16 and float16 weights), ``w_{t+1}`` is rounded
    stochastically (:func:`~layca_optax._rounding.rounded_update`). On
    GPUs every layer's coefficients are computed at once
    (:func:`_staging.map_leaves`)."""
    sums = _leaf_sums(axes, d, w)
    radius = rd.leaf_radius(axes, w, radius)
    coefficients = _leaf_coefficients(sums, *_leaf_terms(terms, key, radius))
    return _leaf_apply(axes, coefficients, d, w, terms, key)


@checks.public
def scale_by_layca(
    learning_rate: optax.ScalarOrSchedule,
    multipliers: Multipliers = 1.0,
    *,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
    radius: Radius = None,
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

    With a fixed ``radius`` :math:`R` (see :func:`reproject_to_sphere`),
    the new weights are scaled by :math:`R / \lVert w\rVert` per layer:
    every nonzero layer lands on its radius and still turns by exactly
    :math:`\arctan(\eta_l)`, also from off its radius (the step is sized
    by the current norm; the radius sets only where the layer lands). A
    layer with no step is only scaled; a zero layer stays zero. The cost
    is a few scalar operations per layer: no array more is read or
    written.

    Args:
      learning_rate: :math:`\rho(t)`, a float or an optax schedule.
      multipliers: per-layer factors :math:`m_l`; see
        :func:`scale_by_layer_multipliers`.
      axis: axes each layer norm reduces over; see :data:`Axis`.
      eps: no update when :math:`\eta_l \lVert d_\perp\rVert \le` ``eps``.
      radius: ``None`` (default): each layer keeps its norm. Else each
        layer's radius: a positive number, a prefix tree of them (per-slice
        arrays with ``axis``) or a callable of the initial params, as in
        :func:`reproject_to_sphere`.

    Returns:
      A :class:`optax.GradientTransformation` that needs ``params``; put it
      last (it includes the reprojection). Its state is a
      :class:`ScaleByLaycaState`, or for a callable ``radius`` the pair of
      it and a :class:`ReprojectToSphereState`.

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
        rd.check_radius(radius)
    rates = layer_rates(learning_rate)

    warned: list[bool] = []

    def init_fn(params):
        check_multipliers(multipliers, params)
        if jax.tree.leaves(params):  # not optax's empty placeholders
            rates.check(params)
        rnd.warn_drift(params, axis, warned)
        state = ScaleByLaycaState(count=jnp.zeros([], jnp.int32))
        stored = rd.init_radius(radius, params, axis)
        if callable(radius):
            return state, ReprojectToSphereState(stored)
        return state

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        state, stored = state if callable(radius) else (state, None)
        radii = rd.layer_radii(radius, getattr(stored, "radius", None), updates)
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
        new = stg.map_layers(
            _leaf,
            axis,
            updates,
            params,
            treedef.unflatten(map(rate, lrs, factors)),
            rnd.leaf_keys(state.count, updates, params),
            *(() if radii is None else (radii,)),
        )
        count = optax.safe_increment(state.count)
        if callable(radius):
            return new, (ScaleByLaycaState(count), stored)
        return new, ScaleByLaycaState(count)

    return optax.GradientTransformation(init_fn, update_fn)
