"""The per-layer formulas of the rotation metrics, from one-pass sums.

The functions here turn a layer's sums (see :func:`_sums.layer_sums`) into
the cosine distance, the tangent of the angle turned, and the radial ratio
and norm of an update. :mod:`._metrics`, :mod:`._tracking` and
:mod:`._references` call them once per leaf, inside :func:`_sums.per_leaf`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _sums as sm


def metric_sums(
    new: jax.Array, old: jax.Array, axes: tuple[int, ...], tan: bool = False
) -> dict[str, jax.Array]:
    """Per layer: ``oo = <old, old>``, (with ``tan``: ``do = <d, old>``,)
    ``dd = <d, d>`` and ``nn = <new, new>``, with ``d = new - old``, in at
    least float32; scalars when a layer is the whole leaf (see
    :func:`_sums.layer_sums`)."""
    dtype = sm.reduction_dtype(jnp.result_type(new, old))
    a, b = jnp.asarray(new).astype(dtype), jnp.asarray(old).astype(dtype)
    d = a - b
    if tan:
        return sm.layer_sums(axes, oo=(b, b), do=(d, b), dd=(d, d), nn=(a, a))
    return sm.layer_sums(axes, oo=(b, b), dd=(d, d), nn=(a, a))


def cosine_from_sums(oo, dd, nn):
    """1 - cos of the angle between ``old`` and ``new`` from the sums of
    :func:`metric_sums`; NaN for non-finite sums."""
    na, nb = jnp.sqrt(nn), jnp.sqrt(oo)
    # 1 - cos = (||w - w0||^2 - (||w|| - ||w0||)^2) / (2 ||w|| ||w0||): exact
    # and free of the cancellation in 1 - <w, w0> / (||w|| ||w0||).
    gap = na - nb
    den = (na * nb) * 2
    both = den > 0
    dist = (dd - gap * gap) / sm.where(both, den, 1)
    # Degenerate: 0 when both are zero, 1 when only one is.
    total = nn + oo
    one = (total > 0).astype(dist.dtype)
    lo, hi = (np.asarray(x, dist.dtype) for x in (0, 2))
    out = jax.lax.clamp(lo, sm.where(both, dist, one), hi)
    return out + (total + dd) * 0  # NaN for a non-finite sum


def tan_from_sums(oo, do, dd, nn):
    """tan of the angle from ``old`` to ``new = old + d``, from one-pass sums.

    Takes ``||old||^2, <d, old>, ||d||^2, ||new||^2``; 0 when either is 0,
    ``inf`` at 90 degrees, NaN for non-finite sums.
    """
    return tan_from_parts(*tangent_parts(oo, do, dd), oo, dd, nn)


def tangent_parts(bb, db, dd) -> tuple[Any, Any, Any]:
    """``||old||``, ``k = <d, old> / ||old||^2`` (0 for a zero ``old``) and
    the norm of the part of ``d`` across ``old``."""
    k = sm.ratio(db, bb)
    return jnp.sqrt(bb), k, jnp.sqrt(jnp.maximum(dd - k * db, 0))


def tan_from_parts(nb, k, across, bb, dd, aa):
    """:func:`tan_from_sums` from :func:`tangent_parts`' values."""
    # With d = new - old, `new` has ||old|| (1 + k) along `old`, and across
    # it the part of d across `old`.
    along = nb * (1 + k)
    tan = sm.where(along == 0, jnp.inf, sm.ratio(across, along))
    out = sm.where((bb > 0) & (aa > 0), tan, 0.0)
    return out + sm.nan_if_nonfinite(bb, dd, aa)


def drop_reduced(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """A per-layer value with the reduced dims dropped: the kept axes'
    shape (``(L,)`` for ``axes=(1, 2)`` on ``(L, d_in, d_out)``), a scalar
    when the layer is the whole leaf."""
    return jnp.squeeze(x, axes) if axes and jnp.ndim(x) else x


def cosine_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    """The cosine distance of each layer (slice) of one leaf."""
    return drop_reduced(cosine_from_sums(**metric_sums(new, old, axes)), axes)


def tan_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    """The tangent of the angle each layer (slice) of one leaf turned."""
    sums = metric_sums(new, old, axes, tan=True)
    return drop_reduced(tan_from_sums(**sums), axes)


def update_sums(
    w: jax.Array, u: jax.Array, new: jax.Array, axes: tuple[int, ...]
) -> dict[str, jax.Array]:
    """``ww = <w, w>``, ``uw = <u, w>``, ``uu = <u, u>`` and ``nn = <new,
    new>`` (``new = w + u`` as ``optax.apply_updates`` gives it)."""
    dtype = sm.reduction_dtype(jnp.result_type(u, w))
    w, u, new = w.astype(dtype), u.astype(dtype), new.astype(dtype)
    return sm.layer_sums(axes, ww=(w, w), uw=(u, w), uu=(u, u), nn=(new, new))


def update_metrics(ww, uw, uu, nn) -> tuple[Any, Any, Any]:
    """Per layer: the rotation rate of the update ``u`` of ``w``, its
    radial ratio and the norm of ``w + u``, from :func:`update_sums`."""
    nw, k, tangential = tangent_parts(ww, uw, uu)
    radial = jnp.abs(k) * nw  # |<u, w>| / ||w||
    floor = sm.machine_eps(jnp.result_type(ww)) * radial
    ratio = sm.ratio(radial, jnp.maximum(tangential, floor))
    ratio = ratio + sm.nan_if_nonfinite(ww, uu)
    rate = tan_from_parts(nw, k, tangential, ww, uu, nn)
    return rate, ratio, jnp.sqrt(nn)
