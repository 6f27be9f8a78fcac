"""The per-layer map of every transformation, staged on GPUs.

:func:`map_layers` applies a leaf function ``f(axes, u, w, *r, *shared)``
to each layer through :func:`~layca_optax._sums.per_leaf` (one cached
``jit`` per shape). On GPUs a leaf function registered with
:func:`staged` runs in :class:`Stages` instead (:func:`map_leaves`):
every layer's sums in one partitioned call, every layer's coefficients at
once, then each layer's elementwise pass, which XLA fuses across layers.
The sums themselves are :mod:`layca_optax._sums`'.
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax._axes import axes_per_leaf
from layca_optax._checks import caller, no_params_error
from layca_optax._masks import path_str
from layca_optax._shard_map import summing_context
from layca_optax._sums import (
    check_floating,
    gpu_forms,
    keep_dims,
    on_gpus,
    per_leaf,
    reduction_dtype,
)
from layca_optax._variadic import stacked_sums


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
    on XLA:CPU (see :mod:`layca_optax._sums`' docstring). Not inside
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
