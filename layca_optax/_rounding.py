"""Stochastic rounding of bfloat16 and float16 layers' new weights.

Rounding ``w + u`` to the nearest bfloat16 drops every entry's update below
half a unit in the last place (ulp), and the dropped parts do not cancel:
``layca(3**-5, base=optax.scale_by_adam())`` lost 2.7% of a 64x256
bfloat16 kernel's norm in 300 steps (``tests/core/test_low_precision.py``).
Rounding the new weights stochastically, ``round(x)`` the neighbour above
with probability ``(x - lo) / (hi - lo)`` (so ``E[round(x)] = x``), keeps
every update in expectation; a per-layer scale close to 1 keeps the
expected squared norm (:func:`rounded_update`). What remains is a random
walk of the norm, ``sqrt(steps)`` times :func:`drift_per_step`, about
which ``init`` warns (:func:`drift_message`).

Layca's steps return ``u = round(w + u) - w`` in the weights' dtype: the
difference of two nearby floats of one dtype is exact in it (Sterbenz), so
``optax.apply_updates(w, u)`` lands on ``round(w + u)`` exactly. The bits
come from a key made of the step count and the leaf's index, so a step is
deterministic (same count, same result, also after a checkpoint restore)
and different leaves get independent bits. Float32 and float64 layers are
not touched: their update is computed as before, bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _axes as ax, _checks as checks, _sums as sm
from layca_optax._masks import path_str


# Any fixed seed: the key of step t is fold_in(key(_SEED), t).
_SEED = 0x1A7CA
# Random bits per entry: the probability is read to 2^-16 of an ulp (exact
# for bfloat16 and for float16 above its subnormals: float32 has 16 and 13
# more significant bits).
_BITS = 16
# init warns about layers whose norm's random walk over _WARN_STEPS steps
# would exceed _WARN_DRIFT (one standard deviation): see drift_per_step.
_WARN_STEPS, _WARN_DRIFT = 10_000, 0.01
# True inside `nearest_rounding()`: read when a step is traced.
_NEAREST = contextvars.ContextVar("layca_optax_nearest", default=False)


def is_low_precision(dtype: Any) -> bool:
    """Whether a layer of ``dtype`` gets stochastic rounding: a floating
    dtype narrower than float32 (bfloat16, float16)."""
    dtype = jnp.dtype(dtype)
    return bool(jnp.issubdtype(dtype, jnp.floating)) and dtype.itemsize < 4


def _lattice(x: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(q, spacing)``: the spacing of ``dtype`` at ``x`` (a power of two;
    for subnormals the subnormal one; at least ``2^-126``, float32's
    smallest normal number, which is coarser than bfloat16's below
    ``1e-36``) and ``q = x / spacing``, so ``floor(q) * spacing`` and
    ``(floor(q) + 1) * spacing`` are the neighbours of ``x`` in ``dtype``.

    Float32 arithmetic and bit operations only, all exact: no conversion
    to ``dtype`` and back, which XLA may drop (it allows excess precision:
    on GPU it removes float32 -> bfloat16 -> float32 pairs).
    """
    info = jnp.finfo(dtype)
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    exponent = ((bits >> 23) & 0xFF) - 127
    k = jnp.maximum(jnp.maximum(exponent, info.minexp) - info.nmant, -126)
    spacing = jax.lax.bitcast_convert_type((k + 127) << 23, jnp.float32)
    inverse = jax.lax.bitcast_convert_type((127 - k) << 23, jnp.float32)
    return x.astype(jnp.float32) * inverse, spacing


def stochastic_round(x: jax.Array, key: jax.Array, dtype: Any) -> jax.Array:
    """``x`` rounded to ``dtype``, up or down at random, unbiased.

    With ``lo <= x <= hi`` the two neighbouring values of ``dtype``, the
    result is ``hi`` with probability ``(x - lo) / (hi - lo)`` and ``lo``
    otherwise, so ``E[round(x)] = x`` (the probability is read to
    ``2^-16``: exactly for bfloat16, and for float16 outside its
    subnormals). Values of ``dtype`` (zeros included) come back unchanged;
    subnormals round to their neighbours like any value; ``inf`` and
    ``nan`` stay, and a finite value above the largest finite one rounds
    to ``inf`` with the probability of its excess over that value, in
    ulps (to ``inf`` for sure from one ulp above it).

    Args:
      x: values in a wider dtype (float32).
      key: a JAX PRNG key; the same key gives the same rounding.
      dtype: the dtype to round to (bfloat16, float16).

    Returns:
      An array of ``dtype`` and ``x``'s shape.
    """
    q, spacing = _lattice(x, dtype)
    return _round(q, spacing, key).astype(dtype)


def _round(q: jax.Array, spacing: jax.Array, key: jax.Array) -> jax.Array:
    """``floor(q)`` or ``floor(q) + 1``, the latter with probability
    ``q - floor(q)``, times ``spacing``; ``inf`` and ``nan`` stay."""
    low = jnp.floor(q)
    bits = jax.random.bits(key, jnp.shape(q), jnp.uint16)
    up = bits.astype(q.dtype) < (q - low) * float(2**_BITS)
    return (low + up.astype(q.dtype)) * spacing


def rounded_update(
    axes: tuple[int, ...], x: jax.Array, w: jax.Array, key: jax.Array
) -> jax.Array:
    """``round(x) - w`` in ``w``'s dtype, for the new weights ``x``
    (float32) of the weights ``w`` (bfloat16 or float16).

    ``round`` is :func:`stochastic_round` of ``x`` scaled, per layer (the
    slices over ``axes``), by ``sqrt(1 - V / ||x||^2)``, with ``V`` the sum
    of the entries' rounding variances ``p (1 - p) (hi - lo)^2``: then
    ``E[||round(x)||^2] = ||x||^2``, and the norm does a random walk
    around ``||x||`` instead of growing by ``V`` per step (``V`` is about
    ``5e-6 ||x||^2`` in bfloat16: 2.5% of the norm in 10,000 steps). The
    scale is within ``1e-5`` of 1 for bfloat16 and float16 layers of
    normal values. ``w + result``, computed in ``w``'s dtype, is the
    rounded point wherever it lies within ``[w / 2, 2 w]`` (Sterbenz: the
    difference is exact); an entry that more than halves or changes sign
    lands within an ulp of ``round(x) - w`` of it.
    """
    q, spacing = _lattice(x, w.dtype)
    frac = q - jnp.floor(q)  # NaN for inf and nan
    frac = jnp.where(frac < 1, frac, 0)
    # The entries' variances frac (1 - frac) spacing^2, summed per layer.
    sums = sm.layer_sums(
        axes, xx=(x, x), vv=(frac * spacing, (1 - frac) * spacing)
    )
    ratio = jnp.minimum(sm.ratio(sums["vv"], sums["xx"]), 0.5)
    # x sqrt(1 - ratio): sqrt(1 - ratio) - 1 without cancellation
    x = x - x * (ratio / (1 + jnp.sqrt(1 - ratio)))
    r = _round(*_lattice(x, w.dtype), key)
    return (r - w.astype(r.dtype)).astype(w.dtype)


def step_key(count: jax.Array) -> jax.Array:
    """The key of the step ``count`` (an int32 scalar)."""
    return jax.random.fold_in(jax.random.key(_SEED), count)


def leaf_keys(count: jax.Array, updates: Any, params: Any) -> Any:
    """A tree like ``updates`` of one key per leaf: ``fold_in`` of the
    step's key with the leaf's index where the leaf of ``params`` is
    bfloat16 or float16, None for the others (which then do no extra
    work)."""
    treedef: Any = jax.tree.structure(updates)
    ws = treedef.flatten_up_to(params)
    low = [is_low_precision(jnp.result_type(w)) for w in ws]
    if not any(low) or _NEAREST.get():
        return treedef.unflatten([None] * len(low))
    key = step_key(count)
    keys = [
        jax.random.fold_in(key, i) if f else None for i, f in enumerate(low)
    ]
    return treedef.unflatten(keys)


@contextlib.contextmanager
def nearest_rounding() -> Iterator[None]:
    """Steps traced inside round to nearest, as before stochastic rounding
    (the ``before`` of ``benchmarks/drift.py`` and of the tests)."""
    token = _NEAREST.set(True)
    try:
        yield
    finally:
        _NEAREST.reset(token)


def drift_per_step(w: Any, axes: tuple[int, ...]) -> float:
    """The largest, over the layers (slices over ``axes``) of the leaf
    ``w``, standard deviation of the relative change of a layer's norm in
    one step of stochastic rounding: ``sqrt(sum(x^2 s^2) / 6) / ||x||^2``,
    ``s`` the spacing of ``w``'s dtype at each entry ``x`` (the variance of
    a rounding is ``s^2 / 6`` on average when an update spans an ulp or
    more, less for smaller updates). Over ``T`` steps the norm walks by
    ``sqrt(T)`` times this (measured: 0.9 to 1.0 times the prediction for
    rates ``3^-3``, 0.7 to 1.0 for ``3^-6``). From the values when ``w`` is
    concrete (subnormal entries count with their coarse spacing), else for
    normal entries: ``0.52 * 2^-nmant / sqrt(n)``, ``n`` entries a layer.
    """
    info = jnp.finfo(w.dtype)
    if not checks.is_concrete(w):
        n = math.prod(jnp.shape(w)[a] for a in axes) if axes else 1
        return 0.52 * 2.0**-info.nmant / math.sqrt(max(n, 1))
    with jax.ensure_compile_time_eval():
        x = jnp.asarray(w, jnp.float32)
        spacing = _lattice(x, w.dtype)[1]
        keep = sm.keep_dims(axes, x.ndim)
        xs = jnp.sum(x * x * spacing * spacing, axes, keepdims=keep)
        xx = jnp.sum(x * x, axes, keepdims=keep)
        walk = np.asarray(jnp.sqrt(xs / 6) / xx)
    walk = walk[np.isfinite(walk)]  # zero or non-finite layers: none
    return float(walk.max()) if walk.size else 0.0


def drift_message(params: Any, axis: Any) -> str:
    """The warning due at ``init`` ("" when none is): the bfloat16 and
    float16 layers whose norm, under stochastic rounding, would walk by
    more than 1% (one standard deviation) in 10,000 steps, with their
    numbers and the float32-master-weights recipe."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    axes = ax.axes_per_leaf(params, axis)
    found = []
    for (path, w), a in zip(flat, axes, strict=True):
        if is_low_precision(jnp.result_type(w)) and jnp.size(w):
            walk = drift_per_step(w, a) * math.sqrt(_WARN_STEPS)
            if walk > _WARN_DRIFT:
                name = path_str(path) if path else "(the params)"
                found.append(f"{name} ({w.dtype}, {walk:.1%})")
    if not found:
        return ""
    shown = ", ".join(found[:8]) + (
        f" (and {len(found) - 8} more)" if len(found) > 8 else ""
    )
    return (
        f"`{checks.caller()}`: the norms of {len(found)} bfloat16/float16 "
        f"layers would drift by more than {_WARN_DRIFT:.0%} in "
        f"{_WARN_STEPS:,} steps: {shown} (one standard deviation of a "
        "random walk, growing as the square root of the steps). Their new "
        "weights are rounded stochastically (no systematic drift), but "
        "each rounding moves a small layer's norm. To keep the norms, keep "
        "float32 params (master weights) and cast them in the forward "
        "pass, e.g. loss(jax.tree.map(lambda w: w.astype(jnp.bfloat16), "
        "params)): Layca then keeps each norm to 1e-6."
    )


def warn_drift(params: Any, axis: Any, warned: list[bool]) -> None:
    """Warns (once: ``warned`` records it) with :func:`drift_message`."""
    if warned or not jax.tree.leaves(params):
        return
    message = drift_message(params, axis)
    if message:
        warned.append(True)
        warnings.warn(message, UserWarning, stacklevel=3)
