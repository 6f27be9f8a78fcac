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
and compiling 100 layers took 2.3 s instead of 0.4 s on XLA:CPU.) On GPUs,
where each of those scalar operations was a kernel of its own, the sums
are one variadic reduction per layer and the map is staged instead
(:func:`reduce_products`, :func:`map_leaves`): the program is chosen when
it is lowered (``jax.lax.platform_dependent``), and
:func:`gpu_forms` forces either.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools as ft
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax._axes import axes_per_leaf
from layca_optax._checks import caller, no_params_error
from layca_optax._masks import path_str
from layca_optax._shard_map import complete_sum, summing_context
from layca_optax._variadic import (
    local_reduction,
    partitioned_reduction,
    plain_reductions,
    stacked_sums,
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
    (:func:`reduce_products`' variadic reduction, :func:`map_leaves`'
    stages) on every platform while tracing (tests, benchmarks); ``None``:
    on GPUs only, as by default."""
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


class Stages(NamedTuple):
    """A leaf function ``f(axes, u, w, *r, *shared)`` in stages, for
    :func:`map_leaves`; with ``n = arity``, ``x = (u, w, *r)``, ``f`` must
    equal ``apply(axes, coefficients(sums(axes, *x[:n]), *args(*x[n:],
    *shared)), *x, *shared)`` (module-level functions: :func:`per_leaf`
    caches them). The sums read the first ``n`` arrays only (``u``, ``w``
    and, for a base with a state, e.g. its momentum): the staged layers'
    are one partitioned call (:func:`layca_optax._variadic.stacked_sums`),
    split as each layer's ``w``."""

    sums: Callable[..., dict[str, jax.Array]]  # (axes, *x[:arity]): a layer's
    args: Callable[..., tuple]  # per-layer scalars (None: 0)
    coefficients: Callable[..., tuple]  # from sums (vectors) and args
    apply: Callable[..., Any]  # (axes, coefficients, u, w, *r, *shared)
    arity: int = 2  # how many of (u, w, *r) the sums read


_STAGES: dict[Callable, Stages] = {}


def no_args(*_: Any) -> tuple:
    """:attr:`Stages.args` of a leaf function without per-layer scalars."""
    return ()


def scalar_args(*values: Any) -> tuple:
    """:attr:`Stages.args` of a leaf function whose only arguments after
    its arrays are the scalars its coefficients take (e.g. ``eps``)."""
    return values


def combine(
    axes: tuple[int, ...], coefficients: tuple, u: jax.Array, w: jax.Array
) -> jax.Array:
    """``a_u * u + a_w * w`` for ``coefficients = (a_u, a_w)``, in the
    reduction dtype, cast to ``u``'s: the :attr:`Stages.apply` of the leaf
    functions whose result is a combination of the step and the weights."""
    del axes
    dtype = reduction_dtype(u.dtype)
    a_u, a_w = coefficients
    return (a_u * u.astype(dtype) + a_w * w.astype(dtype)).astype(u.dtype)


def staged(stages: Stages) -> Callable[[Callable], Callable]:
    """Registers ``stages`` as the staged form of the decorated leaf
    function (see :func:`map_leaves`)."""

    def register(fn: Callable) -> Callable:
        _STAGES[fn] = stages
        return fn

    return register


def map_leaves(
    leaf_fn: Callable, axes: list, args: list[tuple], shared: tuple = ()
) -> list:
    """``[per_leaf(leaf_fn, a, *x, *shared) for a, x in zip(axes, args)]``.

    On GPUs (:func:`on_gpus`), for a leaf function registered with
    :func:`staged`, the layers whose sums are scalars are staged: each
    layer's sums (one variadic reduction, which XLA GPU runs as two
    kernels), stacked into vectors behind an optimization barrier, every
    layer's coefficients at once, then each layer's ``apply`` reading its
    entries. XLA GPU then fuses the layers' last reduction stages into one
    kernel, their coefficients into another, and the metrics' formulas
    (whose ``apply`` is the formula) into one: an H100 step of 48 ``(1024,
    1024)`` layers has 103 kernels instead of 241, where each layer
    computed its coefficients in kernels of its own, and
    :func:`layca_optax.rotation_metrics` 102 instead of 144
    (``benchmarks/gpu_cost.py``; without the barrier XLA folded the stack
    and its slices back into per-layer values). Not on other platforms:
    the slices that read each layer's coefficients made every layer's
    kernel distinct, and compiling 100 layers took 2.3 s instead of 0.4 s
    on XLA:CPU (see the module docstring). Not inside
    :func:`layca_optax.psum_layer_sums` either (per-device sums, completed
    per layer). Under ``jit`` with sharded layers, every staged layer's
    sums are one partitioned call (:func:`layca_optax._variadic.
    stacked_sums`): each device's sums of its shards, all-reduced once
    (600 bytes per GPT-2 step under FSDP, where the partitioner had
    all-gathered each device's partial sums, 4.8 kB). (Reducing each
    layer to partial sums and completing every layer's at once saved
    another kernel per layer, but under FSDP or tensor parallelism the
    partial sums of a layer split along a reduced axis were all-gathered:
    6.6 MB per GPT-2 step.)
    """

    def per() -> list:
        return [
            per_leaf(leaf_fn, a, *x, *shared)
            for a, x in zip(axes, args, strict=True)
        ]

    stages = _STAGES.get(leaf_fn)
    if stages is None or summing_context() is not None:
        return per()
    ids = [
        i
        for i, (a, x) in enumerate(zip(axes, args, strict=True))
        if not keep_dims(a, jnp.ndim(x[0]))
        and all(
            np.ndim(v) == 0 for v in stages.args(*x[stages.arity :], *shared)
        )
    ]
    if not ids:
        return per()

    def gpu() -> list:
        with gpu_forms(True):
            return _staged_map(leaf_fn, stages, axes, args, shared, ids)

    return on_gpus(gpu, per)


def _staged_map(
    leaf_fn: Callable,
    stages: Stages,
    axes: list,
    args: list[tuple],
    shared: tuple,
    ids: list[int],
) -> list:
    """:func:`map_leaves` with the leaves ``ids`` staged: each layer's
    sums, every layer's coefficients at once (per dtype), then each
    layer's ``apply``."""
    staged, arity = set(ids), stages.arity
    out = [
        None if i in staged else per_leaf(leaf_fn, a, *x, *shared)
        for i, (a, x) in enumerate(zip(axes, args, strict=True))
    ]
    sums = ft.partial(per_leaf, stages.sums)
    groups: dict[Any, list[int]] = {}  # per dtype of the sums
    for i in ids:
        dtype = reduction_dtype(jnp.result_type(*args[i][:arity]))
        groups.setdefault(dtype, []).append(i)
    for dtype, order in groups.items():
        first = order[0]
        operands = [args[i][:arity] for i in order]
        shapes = jax.eval_shape(ft.partial(sums, axes[first]), *operands[0])
        names = tuple(shapes)
        matrix = stacked_sums(sums, [axes[i] for i in order], operands, names)
        matrix = jax.lax.optimization_barrier(matrix)
        vectors = {n: matrix[k] for k, n in enumerate(names)}
        rows = [stages.args(*args[i][arity:], *shared) for i in order]
        columns = [_column(c, dtype) for c in zip(*rows, strict=True)]
        coefficients = stages.coefficients(vectors, *columns)
        for k, i in enumerate(order):
            mine = tuple(
                jax.lax.index_in_dim(c, k, keepdims=False) if np.ndim(c) else c
                for c in coefficients
            )
            out[i] = per_leaf(stages.apply, axes[i], mine, *args[i], *shared)
    return out


def _column(values: tuple, dtype: Any) -> Any:
    """One per-layer argument of a group's layers as a vector (a number or
    array shared by all as itself; None stands for 0)."""
    first = values[0]
    if all(v is first for v in values):
        return first
    if all(isinstance(v, int | float | None) for v in values):
        return np.array([0 if v is None else v for v in values], dtype)
    return jnp.stack(
        [jnp.asarray(0 if v is None else v, dtype) for v in values]
    )


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
    same values (e.g. a traced ``eps``) for every leaf; staged on GPUs
    (:func:`map_leaves`)."""
    treedef: Any
    us, treedef = jax.tree.flatten(updates)
    ws = treedef.flatten_up_to(params)
    check_floating(params)
    check_shapes(us, ws, updates)
    others = [treedef.flatten_up_to(tree) for tree in rest]
    extra = list(zip(*others, strict=True)) if others else [()] * len(us)
    args = [(u, w, *r) for u, w, r in zip(us, ws, extra, strict=True)]
    out = map_leaves(leaf_fn, axes_per_leaf(updates, axis), args, shared)
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
