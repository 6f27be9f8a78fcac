"""The fused Layca step's per-layer coefficients, from one pass of sums.

:func:`~layca_optax.scale_by_layca` reduces each layer to ``<w, w>``,
``<d, w>`` and ``<d, d>``, turns them here into three per-layer
coefficients (with the per-rate constants of :func:`rate_terms`, computed
once per rate) and applies them in one elementwise pass
(:func:`layca_update`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from layca_optax import _checks as checks, _sums as sm
from layca_optax._projection import parallel_rtol


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
