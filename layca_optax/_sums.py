"""Per-layer sums in one pass, and the per-layer map built on them.

Every transformation of the library reduces each layer to a few sums
(``<w, w>``, ``<d, w>``, ``<d, d>``...), turns them into a few per-layer
coefficients, and applies those in one elementwise pass. The sums are plain
reductions in at least float32: one pass over the inputs, no conditionals.

Range (float32 reductions; see ``docs/robustness.md``): the sums are exact
to rounding when a layer's root-mean-square entry lies within about
``1e-16`` and ``1.8e19 / sqrt(n)`` for ``n`` entries (1e-15 to 1e15 for
layers up to 1e8 entries). Above, a sum of squares overflows to ``inf``:
the transformations give that layer a NaN update (which
``optax.apply_if_finite(optax.identity(), n)`` chained after them skips) or
a NaN metric. Below, squares flush to zero
and the layer is treated as a zero layer: no update.

The coefficients are computed per leaf, as a handful of scalar operations
that XLA fuses into the leaf's elementwise pass. Leaves of one shape then
compile to identical kernels, which XLA compiles once. (Concatenating every
leaf's sums into one vector and computing the coefficients once was tried:
the per-leaf slices that read them back made each leaf's kernel distinct,
and compiling 100 layers took 2.3 s instead of 0.4 s on XLA:CPU.)
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax._axes import axes_per_leaf
from layca_optax._checks import caller, no_params_error
from layca_optax._masks import path_str
from layca_optax._shard_map import complete_sum, summing_context


def reduction_dtype(dtype: Any) -> jnp.dtype:
    """At least float32: bf16/f16 leaves are reduced in float32."""
    return jnp.promote_types(dtype, jnp.float32)


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of ``dtype``."""
    return float(jnp.finfo(dtype).eps)


def keep_dims(axes: tuple[int, ...], ndim: int) -> bool:
    """Whether per-layer values keep the reduced dims: unless a layer is
    the whole (non-scalar) leaf, whose values are then scalars."""
    return not axes or len(axes) < ndim


def layer_sums(
    axes: tuple[int, ...], **pairs: tuple[jax.Array, jax.Array]
) -> dict[str, jax.Array]:
    """Named per-layer sums: ``{name: sum(a * b)}`` over ``axes`` for each
    ``name=(a, b)``, e.g. ``layer_sums(axes, ww=(w, w), dw=(d, w))``.

    The names say which inner product each sum is (``ww`` for ``<w, w>``,
    ``dw`` for ``<d, w>``...), and the coefficient functions take them as
    keyword arguments, so no call depends on an order. Plain reductions
    (one per pair) in the inputs' dtype: cast them to at least float32
    first. Scalars when ``axes`` cover the whole leaf, else with kept dims
    (they broadcast against it). Inside :func:`layca_optax.psum_layer_sums`
    the local sums are completed over the mesh.
    """
    first = next(iter(pairs.values()))[0]
    keep = keep_dims(axes, jnp.ndim(first))
    return {
        name: complete_sum(jnp.sum(a * b, axis=axes, keepdims=keep))
        for name, (a, b) in pairs.items()
    }


def where(pred: jax.Array, a: Any, b: Any) -> jax.Array:
    """``jnp.where(pred, a, b)`` for per-layer values, as one select.

    ``a`` and ``b`` are arrays of ``pred``'s shape or numbers, which become
    constants of the other's dtype (``jnp.where`` would add a nested
    ``jit`` and its promotion logic to every leaf's trace).
    """
    arrays = [x for x in (a, b) if not isinstance(x, int | float)]
    dtype = jnp.result_type(*arrays) if arrays else jnp.float32
    shape = jnp.shape(pred)
    a, b = (
        np.full(shape, x, dtype) if isinstance(x, int | float) else x
        for x in (a, b)
    )
    return jax.lax.select(pred, a, b)


def ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, 0 where ``den`` is 0 (with finite gradients)."""
    nonzero = den != 0
    return where(nonzero, num / where(nonzero, den, 1), 0)


def nan_if_nonfinite(*sums: jax.Array) -> jax.Array:
    """0 where the sums are finite, NaN where one is not (a non-finite
    entry, or a sum beyond the dtype's range): added to a coefficient, it
    makes that layer's result NaN. Each sum is multiplied by 0 before they
    are added (``inf * 0`` is NaN, a finite sum gives 0): adding the sums
    first overflowed for finite sums near the top of the range (``<w, w> +
    <d, d>`` at norms of 1.5e19 in float32)."""
    total = sums[0] * 0
    for s in sums[1:]:
        total = total + s * 0
    return total


@ft.partial(jax.jit, static_argnums=(0, 1, 2))
def _jitted(fn: Callable, static: Any, context: Any, *args: Any) -> Any:
    del context  # a key only: read by complete_sum while tracing
    return fn(static, *args)


def per_leaf(fn: Callable, static: Any, *args: Any) -> Any:
    """``fn(static, *args)`` for one leaf, as a call of a cached ``jit``.

    ``fn`` is a module-level function and ``static`` hashable (e.g. the
    leaf's reduction axes). Leaves of one shape and dtype then share one
    traced computation: each further leaf costs one cached call instead of
    tracing its few dozen operations again, and XLA inlines the calls
    (with identical kernels, which it compiles once). The
    :func:`layca_optax.psum_layer_sums` context is part of the key.
    """
    return _jitted(fn, static, summing_context(), *args)


def map_layers(
    leaf_fn: Callable[..., jax.Array],
    axis: Any,
    updates: Any,
    params: Any,
    *rest: Any,
    shared: tuple = (),
) -> Any:
    """The per-layer map shared by the transformations of this package:
    ``leaf_fn(axes, u, w, *r, *shared)`` for each leaf ``u`` of ``updates``
    (``w`` of ``params``, ``r...`` of ``rest``) through :func:`per_leaf`,
    with ``axes`` the leaf's reduction axes for ``axis`` and ``shared`` the
    same values (e.g. a traced ``eps``) for every leaf."""
    treedef: Any
    us, treedef = jax.tree.flatten(updates)
    ws = treedef.flatten_up_to(params)
    check_floating(params)
    check_shapes(us, ws, updates)
    others = [treedef.flatten_up_to(tree) for tree in rest]
    extra = list(zip(*others, strict=True)) if others else [()] * len(us)
    axes = axes_per_leaf(updates, axis)
    out = [
        per_leaf(leaf_fn, a, u, w, *r, *shared)
        for a, u, w, r in zip(axes, us, ws, extra, strict=True)
    ]
    return treedef.unflatten(out)


def check_shapes(us: list, ws: list, updates: Any) -> None:
    """``ValueError`` naming the first layer whose update's shape is not
    its weights' (a broadcastable update would silently change the
    layer's shape or be broadcast against it)."""
    for u, w, (path, _) in zip(
        us, ws, jax.tree_util.tree_flatten_with_path(updates)[0], strict=True
    ):
        if np.shape(u) != np.shape(w):
            where = repr(path_str(path)) if path else "(the params)"
            raise ValueError(
                f"`{caller()}`: the update of the layer {where} has shape "
                f"{np.shape(u)}, its weights {np.shape(w)}; an update must "
                "have its layer's shape."
            )


def check_floating(params: Any, flags: Any = None) -> None:
    """``ValueError`` naming the first layer (leaf of ``params``, where
    ``flags`` is True if given) whose weights are not real floating point:
    rotating integer, bool or complex weights would truncate them or drop
    their imaginary part."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    marks = [True] * len(flat) if flags is None else jax.tree.leaves(flags)
    for (path, w), layer in zip(flat, marks, strict=True):
        dtype = getattr(w, "dtype", None) or jnp.result_type(w)
        if layer and not jnp.issubdtype(dtype, jnp.floating):
            where = repr(path_str(path)) if path else "(the params)"
            raise ValueError(
                f"`{caller()}`: the layer {where} has dtype "
                f"{dtype}; layers must be real floating point (float16, "
                "bfloat16, float32, float64). Leave it out of `mask` (it "
                "then goes to `other`)."
            )


def stateless_map_layers(
    leaf_fn: Callable[..., jax.Array],
    axis: Any,
    shared: tuple = (),
) -> optax.GradientTransformation:
    """A stateless transformation whose ``update`` is :func:`map_layers`;
    ``params`` is required (``ValueError`` without it)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise no_params_error()
        new = map_layers(leaf_fn, axis, updates, params, shared=shared)
        return new, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
