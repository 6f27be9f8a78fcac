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

from layca_optax import _staging as stg, _sums as sm


def metric_sums(
    new: jax.Array, old: jax.Array, axes: tuple[int, ...]
) -> dict[str, jax.Array]:
    """Per layer: ``oo = <old, old>``, ``do = <d, old>``, ``dd = <d, d>``,
    ``nn = <new, new>`` and ``no = <new, old>``, with ``d = new - old``, in
    at least float32, in one pass; scalars when a layer is the whole leaf
    (see :func:`_sums.layer_sums`)."""
    dtype = sm.reduction_dtype(jnp.result_type(new, old))
    a, b = jnp.asarray(new).astype(dtype), jnp.asarray(old).astype(dtype)
    d = a - b
    return sm.layer_sums(
        axes, oo=(b, b), do=(d, b), dd=(d, d), nn=(a, a), no=(a, b)
    )


def _along_across(oo, do, dd, nn, no) -> tuple[Any, Any]:
    """The lengths of ``new``'s parts along ``old`` (``<new, old> /
    ||old||``, signed) and across it, from :func:`metric_sums`.

    The part across is computed from ``d`` or from ``new``, whichever is
    smaller, so that it is relative to the smaller one's rounding: ``d``
    when ``new`` is near ``old`` (``||d||^2 - <d, old>^2 / ||old||^2`` keeps
    its accuracy when the norm changes too: the rounding is that of
    ``<d, d>``, not of the norms), ``new`` when it is much smaller than
    ``old``.
    """
    along = sm.ratio(no, jnp.sqrt(oo))
    from_d = dd - sm.ratio(do, oo) * do
    from_new = nn - sm.ratio(no, oo) * no
    across2 = jnp.maximum(sm.where(dd <= nn, from_d, from_new), 0)
    return along, jnp.sqrt(across2)


def cosine_from_sums(oo, do, dd, nn, no):
    """1 - cos of the angle between ``old`` and ``new`` from the sums of
    :func:`metric_sums`; NaN for non-finite sums.

    Below 45 degrees, from the tangent ``t`` of the angle (the parts of
    ``new`` across and along ``old``, :func:`_along_across`): ``t^2 / (s (1
    + s))`` with ``s = sqrt(1 + t^2)``, without cancellation, so that a
    small turn reads right also when the norm changes (a 1e-4 rad turn with
    1% norm growth read 27% off from ``||d||^2 - (||new|| - ||old||)^2``).
    The relative error is about ``eps (1 + (g / theta)^2)`` for a relative
    norm change ``g`` and an angle ``theta``. At 45 degrees and beyond,
    ``1 - <new, old> / (||new|| ||old||)``, exact to ``eps`` absolute.
    """
    along, across = _along_across(oo, do, dd, nn, no)
    both = (oo > 0) & (nn > 0)
    small = both & (along > 0) & (across < along)
    t = across / sm.where(small, along, 1)
    s = jnp.sqrt(1 + t * t)
    by_tan = (t * t) / (s * (1 + s))
    # ||new|| ||old|| as a product of roots: their product's square, or
    # twice it, leaves float32 near the top of the range.
    den = sm.where(both, jnp.sqrt(nn) * jnp.sqrt(oo), 1)
    by_dot = 1 - no / den
    dist = sm.where(small, by_tan, by_dot)
    # Degenerate: 0 when both are zero, 1 when only one is.
    one = ((oo > 0) | (nn > 0)).astype(dist.dtype)
    lo, hi = (np.asarray(x, dist.dtype) for x in (0, 2))
    out = jax.lax.clamp(lo, sm.where(both, dist, one), hi)
    return out + sm.nan_if_nonfinite(oo, do, dd, nn, no)


def tan_from_sums(oo, do, dd, nn, no):
    """tan of the angle from ``old`` to ``new = old + d``, from one-pass sums.

    Takes ``||old||^2, <d, old>, ||d||^2, ||new||^2, <new, old>``; 0 when
    either norm is 0, ``inf`` at 90 degrees, negative beyond, NaN for
    non-finite sums. See :func:`_along_across`.
    """
    along, across = _along_across(oo, do, dd, nn, no)
    tan = sm.where(along == 0, jnp.inf, sm.ratio(across, along))
    out = sm.where((oo > 0) & (nn > 0), tan, 0.0)
    return out + sm.nan_if_nonfinite(oo, do, dd, nn, no)


def tangent_parts(bb, db, dd) -> tuple[Any, Any, Any]:
    """``||old||``, ``k = <d, old> / ||old||^2`` (0 for a zero ``old``) and
    the norm of the part of ``d`` across ``old``."""
    k = sm.ratio(db, bb)
    return jnp.sqrt(bb), k, jnp.sqrt(jnp.maximum(dd - k * db, 0))


def drop_reduced(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """A per-layer value with the reduced dims dropped: the kept axes'
    shape (``(L,)`` for ``axes=(1, 2)`` on ``(L, d_in, d_out)``), a scalar
    when the layer is the whole leaf."""
    return jnp.squeeze(x, axes) if axes and jnp.ndim(x) else x


_METRIC_SUMS = ("oo", "do", "dd", "nn", "no")  # metric_sums' names


def _metric_sums(axes: tuple[int, ...], new, old) -> dict[str, jax.Array]:
    return metric_sums(new, old, axes)


def _as_tuple(sums: dict[str, jax.Array]) -> tuple:
    """The sums themselves: each layer's formula is applied to its own
    entries (XLA GPU then computes every layer's in one kernel; computed
    on the stacked vectors, each layer's value was sliced out by a kernel
    of its own)."""
    return tuple(sums[name] for name in _METRIC_SUMS)


def _cosine(axes: tuple[int, ...], sums: tuple, *_: Any) -> jax.Array:
    return cosine_from_sums(**dict(zip(_METRIC_SUMS, sums, strict=True)))


def _tan(axes: tuple[int, ...], sums: tuple, *_: Any) -> jax.Array:
    return tan_from_sums(**dict(zip(_METRIC_SUMS, sums, strict=True)))


@stg.staged(stg.Stages(_metric_sums, stg.no_args, _as_tuple, _cosine))
def cosine_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    """The cosine distance of each layer (slice) of one leaf (staged on
    GPUs: :func:`_staging.map_leaves`)."""
    return drop_reduced(cosine_from_sums(**metric_sums(new, old, axes)), axes)


@stg.staged(stg.Stages(_metric_sums, stg.no_args, _as_tuple, _tan))
def tan_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    """The tangent of the angle each layer (slice) of one leaf turned
    (staged on GPUs: :func:`_staging.map_leaves`)."""
    return drop_reduced(tan_from_sums(**metric_sums(new, old, axes)), axes)


def update_sums(
    w: jax.Array, u: jax.Array, new: jax.Array, axes: tuple[int, ...]
) -> dict[str, jax.Array]:
    """``ww = <w, w>``, ``uw = <u, w>``, ``uu = <u, u>``, ``nn = <new,
    new>`` and ``nw = <new, w>`` (``new = w + u`` as
    ``optax.apply_updates`` gives it)."""
    dtype = sm.reduction_dtype(jnp.result_type(u, w))
    w, u, new = w.astype(dtype), u.astype(dtype), new.astype(dtype)
    return sm.layer_sums(
        axes, ww=(w, w), uw=(u, w), uu=(u, u), nn=(new, new), nw=(new, w)
    )


def update_metrics(ww, uw, uu, nn, nw) -> tuple[Any, Any, Any]:
    """Per layer: the rotation rate of the update ``u`` of ``w``, its
    radial ratio and the norm of ``w + u``, from :func:`update_sums`."""
    norm_w, k, tangential = tangent_parts(ww, uw, uu)
    radial = jnp.abs(k) * norm_w  # |<u, w>| / ||w||
    floor = sm.machine_eps(jnp.result_type(ww)) * radial
    ratio = sm.ratio(radial, jnp.maximum(tangential, floor))
    ratio = ratio + sm.nan_if_nonfinite(ww, uu)
    rate = tan_from_sums(oo=ww, do=uw, dd=uu, nn=nn, no=nw)
    return rate, ratio, jnp.sqrt(nn)
