"""The GPU program's reductions, partitioned as sums of their products.

On GPUs a layer's products (``w * w``, ``d * w``, ``d * d``) are reduced in
ONE variadic ``lax.reduce`` (see :func:`layca_optax._sums.reduce_products`
for why). XLA's SPMD partitioner cannot all-reduce a variadic reduction
over a sharded axis (its reducer is one function of every operand): it
all-gathered each device's partial sums and reduced them again, 8 values
per sum and layer under FSDP on 8 devices instead of one. Here the
reductions are ``custom_partitioning`` calls: partitioned, each device
reduces its shard in one variadic reduction and the partial sums are
all-reduced (``psum``) over the mesh axes that split a reduced axis:

- :func:`partitioned_reduction`: one layer's sums (its own all-reduce,
  which XLA combines with the others');
- :func:`stacked_sums`: every staged layer's sums stacked into one
  ``(names, layers)`` matrix (:func:`layca_optax._staging.map_leaves`), with
  ONE all-reduce of the matrix per set of mesh axes (per-layer all-reduces
  were combined by XLA into one buffer and sliced back out by a kernel per
  value).

On one device, and inside ``jax.shard_map``, both are the plain
reductions. Under ``jax.vmap`` they are the plain reductions (no batching
rule for a partitioned call), and they are differentiated as plain sums.
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
from jax.experimental.custom_partitioning import (
    ArrayMapping,
    SdyShardingRule,
    custom_partitioning,
)
from jax.sharding import NamedSharding, PartitionSpec


# True while tracing the body of a partitioned call: its reductions are
# the plain variadic one (global arrays in the body, shards in the
# partitioned program).
_PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "layca_optax_plain_reductions", default=False
)


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Plain variadic reductions (:func:`plain_reductions`) while tracing."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def plain_reductions() -> bool:
    """Whether the reductions traced now are plain (a cache key too)."""
    return _PLAIN.get()


def _add(x: tuple, y: tuple) -> tuple:
    return tuple(a + b for a, b in zip(x, y, strict=True))


def local_reduction(axes: tuple[int, ...], *products: jax.Array) -> tuple:
    """The sums of ``products`` over ``axes`` as one variadic reduction."""
    zeros = tuple(np.zeros((), p.dtype) for p in products)
    return tuple(jax.lax.reduce(products, zeros, _add, axes))


def _spec(sharding: Any, ndim: int) -> tuple | None:
    """A ``NamedSharding``'s spec, one entry per dim (None: not named)."""
    if not isinstance(sharding, NamedSharding):
        return None
    spec = tuple(sharding.spec)
    return spec + (None,) * (ndim - len(spec))


def _mesh_axes(spec: tuple, dims: tuple[int, ...]) -> tuple[str, ...]:
    """The mesh axes that split the dims ``dims`` of ``spec``."""
    names: list[str] = []
    for d in dims:
        entry = spec[d]
        if entry is None or entry is PartitionSpec.UNCONSTRAINED:
            continue
        names += [entry] if isinstance(entry, str) else list(entry)
    return tuple(names)


def _layer_split(mesh, shape, dims) -> tuple[NamedSharding, tuple[str, ...]]:
    """An operand's sharding (replicated where it is not named) and the
    mesh axes its reduced ``dims`` are split over."""
    spec = _spec(shape.sharding, len(shape.shape))
    if spec is None:
        return NamedSharding(mesh, PartitionSpec()), ()
    return NamedSharding(mesh, PartitionSpec(*spec)), _mesh_axes(spec, dims)


def _partition_one(axes, mesh, arg_shapes, result_shape):
    """Each device reduces its shard of every product (all sharded as the
    first), then the sums are psummed over the axes that split ``axes``."""
    del result_shape
    same, over = _layer_split(mesh, arg_shapes[0], axes)
    spec = tuple(same.spec) + (None,) * (
        len(arg_shapes[0].shape) - len(same.spec)
    )
    kept = PartitionSpec(*(s for i, s in enumerate(spec) if i not in axes))
    out = NamedSharding(mesh, kept)

    def lower(*products: jax.Array) -> tuple:
        sums = local_reduction(axes, *products)
        return tuple(jax.lax.psum(sums, over)) if over else sums

    return mesh, lower, (out,) * len(arg_shapes), (same,) * len(arg_shapes)


def _rule_one(axes, mesh, operands, results) -> SdyShardingRule:
    """Shardy's rule: the products share one factor per dim, the sums keep
    the factors of the dims not reduced."""
    del mesh, results
    dims = tuple(f"i{k}" for k in range(len(operands[0].shape)))
    kept = tuple(d for k, d in enumerate(dims) if k not in axes)
    return SdyShardingRule(
        operand_mappings=(ArrayMapping(*dims),) * len(operands),
        result_mappings=(ArrayMapping(*kept),) * len(operands),
        reduction_factors=tuple(dims[k] for k in axes),
    )


@ft.partial(custom_partitioning, static_argnums=(0,))
def _partitioned(axes: tuple[int, ...], *products: jax.Array) -> tuple:
    return local_reduction(axes, *products)


_partitioned.def_partition(partition=_partition_one, sharding_rule=_rule_one)


def _unbatched(fn: Callable, plain_fn: Callable) -> Callable:
    """``fn`` (a partitioned call), differentiated as ``plain_fn`` and
    batched as ``jax.vmap(plain_fn)``."""

    @jax.custom_batching.custom_vmap
    def batchable(*args: jax.Array) -> Any:
        return fn(*args)

    @batchable.def_vmap
    def _rule(axis_size: int, in_batched: list, *args: jax.Array):
        del axis_size
        in_axes = [0 if b else None for b in in_batched]
        out = jax.vmap(plain_fn, in_axes=in_axes)(*args)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def differentiable(*args: jax.Array) -> Any:
        return batchable(*args)

    @differentiable.defjvp
    def _jvp(primals: tuple, tangents: tuple) -> tuple:
        return differentiable(*primals), jax.jvp(plain_fn, primals, tangents)[1]

    return differentiable


@ft.cache
def partitioned_reduction(axes: tuple[int, ...]) -> Callable[..., tuple]:
    """``f(*products)``: :func:`local_reduction` over ``axes``,
    partitioned as the sums of the products (see the module
    docstring)."""
    return _unbatched(
        ft.partial(_partitioned, axes), ft.partial(local_reduction, axes)
    )


def stacked_sums(
    sums: Callable[..., dict],
    axes: list[tuple[int, ...]],
    operands: list[tuple[jax.Array, ...]],
    names: tuple[str, ...],
) -> jax.Array:
    """Every layer's ``sums(axes, u, w, ...)`` (scalars, one dtype) of its
    ``operands`` (the same number per layer, its weights ``w`` second),
    stacked into a ``(len(names), layers)`` matrix, rows in ``names``'
    order.

    One partitioned call: each device computes every layer's sums of its
    shards (each operand split as the layer's ``w``), and the matrix is
    psummed once per set of mesh axes that split the layers (a layer's
    column only over its own; with one set, as under FSDP or tensor
    parallelism, one all-reduce of the matrix).
    """
    n = len(operands[0])
    flat = [x for layer in operands for x in layer]

    def body(*arrays: jax.Array) -> jax.Array:
        with plain():
            rows = [
                sums(a, *arrays[n * k : n * (k + 1)])
                for k, a in enumerate(axes)
            ]
        return jnp.stack([jnp.stack([r[m] for r in rows]) for m in names])

    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        shardings, overs = [], []
        for k, a in enumerate(axes):
            same, over = _layer_split(mesh, arg_shapes[n * k + 1], a)
            shardings += [same] * n
            overs.append(over)

        def lower(*arrays: jax.Array) -> jax.Array:
            return _complete(body(*arrays), overs)

        out = NamedSharding(mesh, PartitionSpec())
        return mesh, lower, out, tuple(shardings)

    def rule(mesh, operands, results) -> SdyShardingRule:
        del mesh, results
        mappings = tuple(
            tuple(f"a{j}d{d}" for d in range(len(x.shape)))
            for j, x in enumerate(operands)
        )
        return SdyShardingRule(
            operand_mappings=tuple(ArrayMapping(*m) for m in mappings),
            result_mappings=(ArrayMapping("n", "l"),),
            reduction_factors=tuple(f for m in mappings for f in m),
        )

    call = custom_partitioning(body)
    call.def_partition(partition=partition, sharding_rule=rule)
    return _unbatched(call, body)(*flat)


def _complete(matrix: jax.Array, overs: list[tuple[str, ...]]) -> jax.Array:
    """Each column psummed over its layer's mesh axes: the columns of the
    layers split over one set of axes in one psum, those of layers split
    over none in none."""
    sets: dict[tuple[str, ...], list[int]] = {}
    for k, over in enumerate(overs):
        sets.setdefault(over, []).append(k)
    if len(sets) == 1:
        over = next(iter(sets))
        return jax.lax.psum(matrix, over) if over else matrix
    parts, order = [], []
    for over, columns in sets.items():
        part = matrix[:, np.asarray(columns)]
        parts.append(jax.lax.psum(part, over) if over else part)
        order += columns
    return jnp.concatenate(parts, axis=1)[:, np.argsort(order)]
