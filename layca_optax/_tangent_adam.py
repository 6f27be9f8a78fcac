"""Adam with its moments kept in the tangent space of each layer's weights."""

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


class TangentAdamState(NamedTuple):
    """State of :func:`scale_by_tangent_adam`: the step count, the first
    moment (tangent to the weights it was last updated with) and the
    second moment of the projected gradients (the params' structure and
    shapes)."""

    count: jax.Array  # type: ignore[assignment]  # shape=(), int32
    mu: Any
    nu: Any


def _leaf_sums(axes, g, w, m) -> dict:
    dtype = sm.reduction_dtype(jnp.result_type(g, m))
    gf, wf, mf = (x.astype(dtype) for x in (g, w, m))
    return sm.layer_sums(axes, gw=(gf, wf), mw=(mf, wf), ww=(wf, wf))


def _coefficients(sums: dict) -> tuple:
    """``<g, w> / ||w||^2`` and ``<m, w> / ||w||^2``: the radial parts."""
    return sm.ratio(sums["gw"], sums["ww"]), sm.ratio(sums["mw"], sums["ww"])


def _apply(axes, coefficients, g, w, m, v, b1, b2, eps, c1, c2) -> tuple:
    del axes
    dtype = sm.reduction_dtype(jnp.result_type(g, m, v))
    gf, wf, mf, vf = (x.astype(dtype) for x in (g, w, m, v))
    k_g, k_m = coefficients
    projected = gf - k_g * wf  # P(g)
    mu = b1 * (mf - k_m * wf) + (1 - b1) * projected  # P(b1 m + (1-b1) g)
    nu = b2 * vf + (1 - b2) * projected * projected
    update = (mu / c1) / (jnp.sqrt(nu / c2) + eps)
    return mu.astype(m.dtype), nu.astype(v.dtype), update.astype(g.dtype)


@stg.staged(stg.Stages(_leaf_sums, stg.no_args, _coefficients, _apply, arity=3))
def _leaf(axes, g, w, m, v, b1, b2, eps, c1, c2) -> tuple:
    """``(new mu, new nu, update)`` of one leaf, from one pass of sums
    (``<g, w>``, ``<m, w>``, ``<w, w>``, in at least float32) and one
    elementwise pass; ``c1``, ``c2`` the bias corrections ``1 - b^t``
    (staged on GPUs: :func:`_staging.map_leaves`)."""
    coefficients = _coefficients(_leaf_sums(axes, g, w, m))
    return _apply(axes, coefficients, g, w, m, v, b1, b2, eps, c1, c2)


@checks.public
def scale_by_tangent_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    axis: Axis = None,
) -> optax.GradientTransformation:
    r"""Adam whose moments live in the tangent space of each layer's weights.

    With :math:`P_w(x) = x - \frac{\langle x, w\rangle}{\lVert w\rVert^2}
    w` the projection onto the tangent space of the layer's sphere at its
    current weights :math:`w` (the ``params`` passed to ``update``) and
    :math:`\hat g_t = P_{w_t}(g_t)` the projected gradient:

    .. math::

      m_t &= P_{w_t}(\beta_1 m_{t-1} + (1 - \beta_1) g_t)
           = \beta_1 P_{w_t}(m_{t-1}) + (1 - \beta_1) \hat g_t, \\
      v_t &= \beta_2 v_{t-1} + (1 - \beta_2) \hat g_t^2, \\
      u_t &= \frac{m_t / (1 - \beta_1^t)}
                  {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}.

    The first moment is carried to the new tangent space by projection
    (transport by projection, as :func:`tangent_trace` does for momentum),
    so :math:`\langle m_t, w_t\rangle = 0` per layer, to rounding; the
    second moment measures the tangential gradients only. This is the
    direction of levanter's AdamHR (Riemannian Adam on the fixed-radius
    sphere: moments of the projected gradients, the first one transported
    by projection after each step), without its step and retraction, so
    that Layca or Hyperball take them: ``layca(lr,
    base=scale_by_tangent_adam())`` or ``hyperball(lr,
    base=scale_by_tangent_adam())``. The update itself is not tangent in
    general (the per-entry division gives it a radial part): Layca projects
    it out; Hyperball spends it as it spends ``optax.scale_by_adam``'s.

    When it differs from ``optax.scale_by_adam()``: ``scale_by_adam``'s
    moments accumulate raw gradients, whose radial parts the sphere
    discards at every step, and its momentum, once the weights have turned,
    points partly along them. For a layer whose loss is invariant to its
    scale (followed by a normalization) the gradient is already tangent, so
    :math:`v_t` is Adam's and only the transport of :math:`m` differs
    (by :math:`O(\beta_1 \cdot \text{turn})` per step); for a layer that is
    not scale-invariant (an output layer, a layer feeding a residual
    stream) the radial part of the gradient is large and the two differ
    from the first step. A zero layer gets ``optax.scale_by_adam``'s update
    (every direction is tangent to it).

    Cost: two passes per layer, as every transformation of this package:
    a reduction pass over :math:`g`, :math:`m` and :math:`w` (three sums
    per layer, in at least float32) and an elementwise pass that reads
    :math:`g, w, m, v` and writes :math:`m, v, u`: 10 array reads and
    writes per step at best, against ``optax.scale_by_adam``'s 6 (one pass
    reading :math:`g, m, v`, writing :math:`m, v, u`). In XLA's H100
    program of a whole step (this, ``optax.scale(-lr)`` and
    ``optax.apply_updates``; ``benchmarks/gpu_cost.py --only
    tangent_adam``) a ``(50257, 768)`` layer moves 10 arrays per step
    against ``optax.adam``'s 7 (staged on GPUs as Layca's, see
    docs/performance.md: 2.21 kernels per layer on 48 ``(1024, 1024)``
    layers). XLA:CPU's cost analysis counts 16 against 9 times the
    params' bytes (it reduces each sum alone and writes the two moments
    in separate fusions; ``tests/core/test_tangent_adam.py``).

    Args:
      b1: :math:`\beta_1`, the first moment's decay, in ``[0, 1)``.
      b2: :math:`\beta_2`, the second moment's decay, in ``[0, 1)``.
      eps: :math:`\epsilon \ge 0`, added to the root of the second moment.
      axis: axes each layer's projection reduces over (see :data:`Axis`).

    Returns:
      An :class:`optax.GradientTransformation` whose ``update`` needs
      ``params``, with a :class:`TangentAdamState`.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> tx = layca_optax.scale_by_tangent_adam()
      >>> w = jnp.array([[1.0, 0.0]])
      >>> u, state = tx.update(jnp.array([[3.0, 2.0]]), tx.init(w), w)
      >>> u  # the radial part is gone; Adam's first step is the sign
      Array([[0., 1.]], dtype=float32)
      >>> tx = layca_optax.layca(0.1, base=layca_optax.scale_by_tangent_adam())

    References:
      Kingma & Ba, `Adam: a method for stochastic optimization
      <https://arxiv.org/abs/1412.6980>`_, 2015. Becigneul & Ganea,
      `Riemannian adaptive optimization methods
      <https://arxiv.org/abs/1810.00760>`_, 2019. ``marin-community/marin``,
      ``levanter/optim/adamhr.py`` (AdamHR).
    """
    ax.check_axis(axis)
    checks.check_scalar(b1, "b1", low=0.0, high=1.0, high_open=True)
    checks.check_scalar(b2, "b2", low=0.0, high=1.0, high_open=True)
    checks.check_scalar(eps, "eps", low=0.0)

    def init_fn(params):
        return TangentAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise checks.no_params_error()
        count = optax.safe_increment(state.count)
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count
        c2 = 1 - jnp.asarray(b2, jnp.float32) ** count
        leaf_fn: Any = _leaf  # returns three arrays
        out = stg.map_layers(
            leaf_fn,
            axis,
            updates,
            params,
            state.mu,
            state.nu,
            shared=(b1, b2, eps, c1, c2),
        )
        treedef: Any = jax.tree.structure(updates)
        parts = treedef.flatten_up_to(out)
        mu, nu, new = (
            treedef.unflatten([p[i] for p in parts]) for i in range(3)
        )
        return new, TangentAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
