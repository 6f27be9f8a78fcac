"""Layca as the literal chain of its primitives (``layca(fused=False)``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _normalization as normalization,
    _projection as projection,
    _reprojection as reprojection,
    _rounding as rnd,
    _staging as stg,
    _sums as sm,
)
from layca_optax._axes import Axis
from layca_optax._builder import stateless_step
from layca_optax._layca import ScaleByLaycaState
from layca_optax._multipliers import Multipliers, scale_by_layer_multipliers
from layca_optax._radius import Radius


def _widened() -> optax.GradientTransformation:
    """The chain's updates in at least float32 (the fused step computes in
    it too): in float16 its intermediate values (the direction times the
    rate, the step before reprojection) overflow for ordinary inputs."""
    return optax.stateless(
        lambda u, _: jax.tree.map(
            lambda x: x.astype(sm.reduction_dtype(x.dtype)), u
        )
    )


def _rounded_leaf(axes, u, w, key):
    """One leaf of :func:`_in_param_dtype`."""
    if key is None:
        return u.astype(w.dtype)
    return rnd.rounded_update(axes, w.astype(u.dtype) + u, w, key)


def _in_param_dtype(axis: Axis = None) -> optax.GradientTransformation:
    """The update in the params' dtype, as the fused step returns it: for
    bfloat16 and float16 params, ``round(w + u) - w`` with the new weights
    rounded stochastically per layer (``axis``), with the fused step's
    keys (its state counts the steps, as :class:`ScaleByLaycaState` does);
    float32 and float64 updates are cast as before."""

    warned: list[bool] = []

    def init_fn(params):
        rnd.warn_drift(params, axis, warned)
        return ScaleByLaycaState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        keys = rnd.leaf_keys(state.count, updates, params)
        new = stg.map_layers(_rounded_leaf, axis, updates, params, keys)
        count = optax.safe_increment(state.count)
        return new, ScaleByLaycaState(count)

    return optax.GradientTransformation(init_fn, update_fn)


def _no_negative(rate: Any) -> Any:
    """``rate`` where it is not negative, 0 where it is; NaN stays NaN and
    ``-inf`` becomes NaN (``-inf * 0``): a non-finite rate gives a NaN
    update, as on the fused path."""
    return jnp.where(rate < 0, rate * 0, rate)


def nonnegative_rate(
    learning_rate: optax.ScalarOrSchedule,
) -> optax.ScalarOrSchedule:
    """The chain's rate, as the fused step reads it: a schedule's negative
    values (or a traced rate's, under ``optax.inject_hyperparams``) become
    0, so that the layer is not updated (the chain turned by ``|rate|``
    before: the two sign flips cancelled); a NaN or infinite rate makes the
    update NaN on both paths. A constant is checked at construction
    (non-negative) and returned as it is."""
    if callable(learning_rate):
        return lambda count: _no_negative(learning_rate(count))
    if checks.is_concrete(learning_rate):
        return learning_rate
    return _no_negative(learning_rate)


def layca_chain(
    learning_rate: optax.ScalarOrSchedule,
    multipliers: Multipliers = 1.0,
    *,
    axis: Axis = None,
    eps: jax.typing.ArrayLike = 1e-7,
    radius: Radius = None,
) -> optax.GradientTransformation:
    """What :func:`~layca_optax.scale_by_layca` does, as the chain of the
    primitives: widen to float32, scale by ``eta_l`` (so that the
    normalization's ``eps`` sees the scaled step, as in the authors' code),
    :func:`~layca_optax.project_to_tangent`,
    :func:`~layca_optax.normalize_to_param_norm`, scale by ``-eta_l``,
    :func:`~layca_optax.reproject_to_sphere` (onto ``radius``), and back to
    the params' dtype.

    Its intermediate values are ``eta_l d`` and ``w - eta_l s`` (``||s|| =
    ||w||``), so its range is the fused step's with each layer's
    root-mean-square entry times ``max(1, eta_l)``: a layer whose scaled
    direction or stepped weights leave float32's sums (``1.8e19 /
    sqrt(n)``) gets a NaN update where the fused step is exact (see
    ``docs/robustness.md``). Arguments are checked by the caller: the
    primitives are built without checking them again.
    """
    rate = nonnegative_rate(learning_rate)
    with checks.checked():
        scaled = scale_by_layer_multipliers(multipliers)

    def build(axis: Axis) -> optax.GradientTransformation:
        return optax.chain(
            _widened(),
            scaled,
            optax.scale_by_learning_rate(rate, flip_sign=False),
            stateless_step(projection, axis),
            stateless_step(normalization, axis, eps),
            scaled,
            optax.scale_by_learning_rate(rate),
            reprojection.sphere_step(axis, radius),
            _in_param_dtype(axis),
        )

    return _axes_resolved_once(build, axis)


def _axes_resolved_once(
    build: Callable[[Axis], optax.GradientTransformation], axis: Axis
) -> optax.GradientTransformation:
    """``build(axis)``, whose ``update`` resolves ``axis`` once per leaf (a
    callable rule is called once, as in the fused step) and builds its
    steps again with the resolved axes, a tree of tuples (the steps keep
    no ``axis`` in their state)."""
    tx = build(axis)

    def update_fn(updates, state, params=None):
        treedef: Any = jax.tree.structure(updates)
        resolved = treedef.unflatten(ax.axes_per_leaf(updates, axis))
        return build(resolved).update(updates, state, params)

    return optax.GradientTransformation(tx.init, update_fn)
