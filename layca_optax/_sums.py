"""Per-layer sums in one pass.

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
and compiling 100 layers took 2.3 s instead of 0.4 s on XLA:CPU.) On GPUs,
where each of those scalar operations was a kernel of its own, the sums
are one variadic reduction per layer (:func:`reduce_products`) and the
map is staged instead (:mod:`layca_optax._staging`): the program is
chosen when it is lowered (``jax.lax.platform_dependent``), and
:func:`gpu_forms` forces either. The per-layer map itself is in
:mod:`layca_optax._staging`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools as ft
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax._checks import caller
from layca_optax._masks import path_str
from layca_optax._shard_map import complete_sum, summing_context
from layca_optax._variadic import (
    local_reduction,
    partitioned_reduction,
    plain_reductions,
)


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
    keyword arguments, so no call depends on an order. In the inputs'
    dtype (cast them to at least float32 first), in one reduction pass
    (:func:`reduce_products`). Scalars when ``axes`` cover the whole leaf,
    else with kept dims (they broadcast against it). Inside
    :func:`layca_optax.psum_layer_sums` the local sums are completed over
    the mesh.
    """
    first = next(iter(pairs.values()))[0]
    keep = keep_dims(axes, jnp.ndim(first))
    sums = reduce_products(axes, *(a * b for a, b in pairs.values()))
    if keep:
        sums = tuple(jax.lax.expand_dims(s, axes) for s in sums)
    return dict(zip(pairs, complete_sum(sums), strict=True))


# Whether the GPU program's forms (one variadic reduction per layer, the
# staged map) are used (True), not used (False) or used where the lowering
# platform is one of GPU_PLATFORMS (None, the default).
_GPU_FORMS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "layca_optax_gpu_forms", default=None
)
GPU_PLATFORMS = ("cuda", "rocm")  # jax.lax.platform_dependent's names


@contextlib.contextmanager
def gpu_forms(on: bool | None) -> Iterator[None]:
    """Forces (``True``) or rules out (``False``) the GPU program's forms
    (:func:`reduce_products`' variadic reduction, the stages of
    :func:`layca_optax._staging.map_leaves`) on every platform while
    tracing (tests, benchmarks); ``None``: on GPUs only, as by default."""
    token = _GPU_FORMS.set(on)
    try:
        yield
    finally:
        _GPU_FORMS.reset(token)


def on_gpus(gpu: Callable[[], Any], other: Callable[[], Any]) -> Any:
    """``gpu()`` where the program is lowered for a GPU, else ``other()``
    (see :func:`gpu_forms`): both are traced, one is lowered
    (``jax.lax.platform_dependent``), and no conditional remains."""
    forced = _GPU_FORMS.get()
    if forced is not None:
        return gpu() if forced else other()
    branches = dict.fromkeys(GPU_PLATFORMS, gpu)
    return jax.lax.platform_dependent(**branches, default=other)


def reduce_products(axes: tuple[int, ...], *products: jax.Array) -> tuple:
    """``tuple(sum(p, axes) for p in products)``, one reduction pass.

    On GPUs (``cuda``, ``rocm``) as ONE variadic reduction: XLA GPU writes
    a multi-output fusion's extra output (a base optimizer's new momentum,
    fused into the products) into its operand's buffer only through a
    single reduction "hero" (``FusionCanShareBufferHint``); with one
    reduction per product the new momentum got a fresh buffer and a copy
    per step, and each layer three more kernels. Elsewhere one sum per
    product, which XLA fuses into one pass: XLA:CPU reduces a variadic
    reduction sequentially (10 times the rounding error of its vectorized
    sums, and slower). The platform is that of the lowering
    (``jax.lax.platform_dependent``: the other branch is dropped, no
    conditional remains); :func:`gpu_forms` overrides it.
    """
    if len(products) == 1:
        return (jnp.sum(products[0], axes),)
    one = ft.partial(_one_reduction, axes, *products)
    per = ft.partial(_per_product, axes, *products)
    return tuple(on_gpus(one, per))


def _per_product(axes: tuple[int, ...], *products: jax.Array) -> tuple:
    return tuple(jnp.sum(p, axes) for p in products)


@ft.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _one_reduction(axes: tuple[int, ...], *products: jax.Array) -> tuple:
    """The sums of ``products`` over ``axes`` as one variadic reduction,
    partitioned as the sums of the products (a ``psum`` of each device's
    sums, :mod:`layca_optax._variadic`); inside :func:`layca_optax.
    psum_layer_sums` each device's own (completed by the caller).
    Differentiated as plain sums (a variadic reduction has no derivative
    rule)."""
    if summing_context() is not None or plain_reductions():
        return local_reduction(axes, *products)
    return tuple(partitioned_reduction(axes)(*products))


@_one_reduction.defjvp
def _one_reduction_jvp(axes, primals, tangents):
    return _one_reduction(axes, *primals), _per_product(axes, *tangents)


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
    del context  # a key only: read by complete_sum and reduce_products
    return fn(static, *args)


def per_leaf(fn: Callable, static: Any, *args: Any) -> Any:
    """``fn(static, *args)`` for one leaf, as a call of a cached ``jit``.

    ``fn`` is a module-level function and ``static`` hashable (e.g. the
    leaf's reduction axes). Leaves of one shape and dtype then share one
    traced computation: each further leaf costs one cached call instead of
    tracing its few dozen operations again, and XLA inlines the calls
    (with identical kernels, which it compiles once). The
    :func:`layca_optax.psum_layer_sums` and :func:`gpu_forms`
    contexts are part of the key.
    """
    key = (summing_context(), _GPU_FORMS.get(), plain_reductions())
    return _jitted(fn, static, key, *args)


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
