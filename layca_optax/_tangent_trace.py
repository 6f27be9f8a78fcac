"""Momentum kept in the tangent space of each layer's current weights."""

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


class TangentTraceState(NamedTuple):
    """State of :func:`tangent_trace`: the momentum, tangent to the weights
    it was last updated with (the params' structure and shapes)."""

    trace: Any


def _leaf_sums(axes, g, w, t) -> dict:
    dtype = sm.reduction_dtype(jnp.result_type(g, t))
    gf, wf, tf = g.astype(dtype), w.astype(dtype), t.astype(dtype)
    return sm.layer_sums(axes, gw=(gf, wf), tw=(tf, wf), ww=(wf, wf))


def _coefficients(sums: dict) -> tuple:
    """``<g, w> / ||w||^2`` and ``<t, w> / ||w||^2``: the radial parts."""
    return sm.ratio(sums["gw"], sums["ww"]), sm.ratio(sums["tw"], sums["ww"])


def _projected(coefficients: tuple, g, w, t, decay) -> tuple:
    """``P(g)`` and ``P(g + decay t)`` of one leaf, ``P`` the projection
    onto the tangent space at ``w``, from one pass of sums (``P`` is
    linear: ``<g + decay t, w> = <g, w> + decay <t, w>``), in at least
    float32."""
    dtype = sm.reduction_dtype(jnp.result_type(g, t))
    gf, wf, tf = g.astype(dtype), w.astype(dtype), t.astype(dtype)
    k_g, k_t = coefficients
    return gf - k_g * wf, gf + decay * tf - (k_g + decay * k_t) * wf


def _apply(axes, coefficients: tuple, g, w, t, decay) -> tuple:
    del axes
    _, new = _projected(coefficients, g, w, t, decay)
    return new.astype(t.dtype), new.astype(g.dtype)


def _nesterov_apply(axes, coefficients: tuple, g, w, t, decay) -> tuple:
    del axes
    projected, new = _projected(coefficients, g, w, t, decay)
    return new.astype(t.dtype), (projected + decay * new).astype(g.dtype)


@stg.staged(stg.Stages(_leaf_sums, stg.no_args, _coefficients, _apply, arity=3))
def _leaf(axes, g, w, t, decay) -> tuple:
    """``(new trace, update)`` of one leaf: ``P(g + decay t)`` twice
    (staged on GPUs: :func:`_staging.map_leaves`)."""
    coefficients = _coefficients(_leaf_sums(axes, g, w, t))
    return _apply(axes, coefficients, g, w, t, decay)


@stg.staged(
    stg.Stages(_leaf_sums, stg.no_args, _coefficients, _nesterov_apply, arity=3)
)
def _nesterov_leaf(axes, g, w, t, decay) -> tuple:
    """``(new trace, update)`` of one leaf with Nesterov's look-ahead:
    ``P(g + decay t)`` and ``P(g) + decay P(g + decay t)``."""
    coefficients = _coefficients(_leaf_sums(axes, g, w, t))
    return _nesterov_apply(axes, coefficients, g, w, t, decay)


@checks.public
def tangent_trace(
    decay: jax.typing.ArrayLike = 0.9,
    nesterov: bool = False,
    *,
    axis: Axis = None,
) -> optax.GradientTransformation:
    r"""Momentum kept in the tangent space of each layer's current weights.

    With :math:`P_w(x) = x - \frac{\langle x, w\rangle}{\lVert w\rVert^2}
    w` the projection onto the tangent space of the layer's sphere at its
    current weights :math:`w` (the ``params`` passed to ``update``):

    .. math::

      m_t = P_{w_t}(g_t + \beta\, m_{t-1}), \qquad
      u_t = m_t \quad\text{or, with Nesterov,}\quad
      u_t = P_{w_t}(g_t) + \beta\, m_t.

    ``optax.trace`` accumulates raw gradients, so the momentum of a layer
    whose norm is held fixed (Layca, Hyperball) keeps radial parts that
    the sphere's constraint discards at every step; here the old momentum
    is carried to the new tangent space by projection (transport by
    projection, as levanter's constrained-geometry optimizers and
    Riemannian SGD on spheres do), so the momentum always lies in the
    tangent space: :math:`\langle m_t, w_t\rangle = 0` per layer, to
    rounding. For a layer whose weights do not move, it is
    ``optax.trace`` of the projected gradients.

    Use it as Layca's (or Hyperball's) ``base``:
    ``layca(lr, base=tangent_trace(0.9))`` in place of
    ``base=optax.trace(0.9)``. A zero layer keeps the plain momentum (every
    direction is tangent to it).

    Cost: one reduction pass over ``g``, the trace and ``w`` (three sums
    per layer, in at least float32) and one elementwise pass. In XLA's
    H100 program of a whole step (this, ``optax.scale(-lr)`` and
    ``optax.apply_updates``; ``benchmarks/gpu_cost.py --only
    tangent_trace``) a ``(50257, 768)`` layer moves 8 arrays per step
    against 5 for ``optax.sgd(lr, momentum=0.9)``: the reduction reads
    ``g``, ``m`` and ``w``, the elementwise pass reads them again and
    writes ``m`` and ``w``. Its layers are staged on GPUs (as Layca's,
    see docs/performance.md): 2.15 kernels per layer on 48 ``(1024,
    1024)`` layers.

    Args:
      decay: :math:`\beta`, the momentum's decay, in ``[0, 1)``.
      nesterov: Nesterov's look-ahead, as ``optax.trace(nesterov=True)``.
      axis: axes each layer's projection reduces over (see :data:`Axis`).

    Returns:
      An :class:`optax.GradientTransformation` whose ``update`` needs
      ``params``, with a :class:`TangentTraceState`.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> tx = layca_optax.tangent_trace(0.9)
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, state = tx.update(jnp.array([[1.0, 2.0]]), tx.init(w), w)
      >>> u  # the radial part (along w) is gone
      Array([[0., 2.]], dtype=float32)
      >>> tx = layca_optax.layca(0.1, base=layca_optax.tangent_trace(0.9))

    References:
      Absil, Mahony & Sepulchre, Optimization Algorithms on Matrix
      Manifolds, 2008, Section 8.1 (vector transport by projection).
    """
    ax.check_axis(axis)
    checks.check_scalar(decay, "decay", low=0.0, high=1.0, high_open=True)
    checks.check_bool(nesterov, "nesterov")

    def init_fn(params):
        return TangentTraceState(trace=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        treedef: Any = jax.tree.structure(updates)
        leaf_fn: Any = _nesterov_leaf if nesterov else _leaf
        out = stg.map_layers(
            leaf_fn,
            axis,
            updates,
            params,
            state.trace,
            shared=(decay,),
        )
        pairs = treedef.flatten_up_to(out)
        trace = treedef.unflatten([p[0] for p in pairs])
        new = treedef.unflatten([p[1] for p in pairs])
        return new, TangentTraceState(trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)
