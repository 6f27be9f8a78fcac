"""Sharding recipes for Layca's params and state on a device mesh.

Under ``jax.jit`` with arrays placed by ``NamedSharding`` nothing else is
needed: the compiler splits each per-layer sum into local sums and an
all-reduce of the results (scalars, or one value per slice with ``axis``).
:func:`param_shardings` and :func:`state_shardings` give the placements for
data parallelism, FSDP and tensor parallelism. Inside ``jax.shard_map``,
see ``_shard_map.py``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from layca_optax import _checks as checks
from layca_optax._shard_map import AxisNames, check_axis_names


def _mesh_entry(
    names: Any, mesh: Any, arg: str
) -> tuple[Any, int, tuple[str, ...]]:
    """A ``PartitionSpec`` entry for ``names``, its device count, its names."""
    if names is None:
        return None, 1, ()
    tup = check_axis_names(names, checks.caller(), arg)
    for name in tup:
        if name not in mesh.axis_names:
            raise ValueError(
                f"`{checks.caller()}({arg}={names!r})`: {name!r} is not an "
                f"axis of the mesh, whose axes are {tuple(mesh.axis_names)!r}."
            )
    size = math.prod(mesh.shape[n] for n in tup)
    return (tup[0] if len(tup) == 1 else tup), size, tup


@checks.public
def param_shardings(
    params: Any,
    mesh: jax.sharding.Mesh,
    *,
    fsdp: AxisNames | None = None,
    tensor: AxisNames | None = None,
) -> Any:
    """``NamedSharding``\\ s for params: replicated, FSDP, tensor-parallel.

    The usual recipes, for ``jax.device_put(params, shardings)`` and
    ``jax.jit(..., out_shardings=...)``:

    - ``tensor``: each leaf with ``ndim >= 2`` (a kernel) is split along
      its last axis (Flax's output features) over these mesh axes;
    - ``fsdp``: each leaf is split along its largest remaining axis (the
      first of equal ones) over these mesh axes;
    - neither: replicated. Both: the 2-D recipe (output axis over
      ``tensor``, largest other axis over ``fsdp``).

    An axis is split only if the number of devices divides its length;
    otherwise that leaf stays replicated over those mesh axes. Data
    parallelism shards the batch, not the params: combine it with
    ``fsdp`` over the same mesh axis (ZeRO-3 style).

    Args:
      params: a pytree of arrays (or anything with a ``shape``).
      mesh: a ``jax.sharding.Mesh``.
      fsdp: the mesh axis (or axes) of fully-sharded data parallelism.
      tensor: the mesh axis (or axes) of tensor parallelism.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec
      >>> import layca_optax
      >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
      >>> params = {"kernel": jnp.zeros((8, 4)), "bias": jnp.zeros(4)}
      >>> shardings = layca_optax.sharding.param_shardings(
      ...     params, mesh, fsdp="data")
      >>> shardings["kernel"].spec == PartitionSpec("data", None)
      True
      >>> params = jax.device_put(params, shardings)

    References:
      Rajbhandari et al., `ZeRO: memory optimizations toward training
      trillion parameter models <https://arxiv.org/abs/1910.02054>`_, 2020
      (the sharded optimizer state that FSDP follows); JAX, `Distributed
      arrays and automatic parallelization
      <https://docs.jax.dev/en/latest/notebooks/Distributed_arrays_and_automatic_parallelization.html>`_.
    """
    meshes = (jax.sharding.Mesh, jax.sharding.AbstractMesh)
    if not isinstance(mesh, meshes):
        raise TypeError(
            f"{checks.arg('mesh')} must be a jax.sharding.Mesh, e.g. "
            f"jax.make_mesh((n,), ('data',)), got {mesh!r} "
            f"({type(mesh).__name__})."
        )
    fsdp_entry, fsdp_size, fsdp_names = _mesh_entry(fsdp, mesh, "fsdp")
    tensor_entry, tensor_size, tensor_names = _mesh_entry(
        tensor, mesh, "tensor"
    )
    if set(fsdp_names) & set(tensor_names):
        raise ValueError(
            f"`{checks.caller()}(fsdp={fsdp!r}, tensor={tensor!r})` must use "
            "different mesh axes."
        )

    def sharding(leaf: Any) -> NamedSharding:
        shape = tuple(jnp.shape(leaf))
        spec: list[Any] = [None] * len(shape)
        if tensor_entry is not None and len(shape) >= 2:
            if shape[-1] % tensor_size == 0:
                spec[-1] = tensor_entry
        free = [
            i
            for i, n in enumerate(shape)
            if spec[i] is None and n % fsdp_size == 0
        ]
        if fsdp_entry is not None and free:
            spec[max(free, key=lambda i: (shape[i], -i))] = fsdp_entry
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(sharding, params)


@checks.public
def state_shardings(tx: optax.GradientTransformation, params: Any) -> Any:
    """The shardings of ``tx.init(params)``, from those of the params.

    Under ``jax.jit`` on a mesh with automatic axes
    (``jax.sharding.AxisType.Auto``, the default of ``Mesh``), state built
    from nothing but shapes (``jnp.zeros_like``: Adam's moments) is not tied
    to the params and lands on one device. This traces ``tx.init`` with
    explicit sharding types instead, so every state leaf gets the sharding
    that follows from the params' (moments and copies as their layer,
    per-layer norms replicated or split with the layer's slices, counters
    replicated). With ``jax.make_mesh``'s default explicit axes,
    ``jax.jit(tx.init)(params)`` already does this.

    Args:
      tx: an optax transformation.
      params: arrays (or ``jax.ShapeDtypeStruct``) placed with
        ``NamedSharding`` on one mesh; other leaves count as replicated.

    Returns:
      A pytree of ``NamedSharding`` on that mesh, with the structure of
      ``tx.init(params)``: use
      ``jax.jit(tx.init, out_shardings=...)(params)``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import layca_optax
      >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
      >>> params = {"kernel": jnp.zeros((8, 4))}
      >>> params = jax.device_put(
      ...     params,
      ...     layca_optax.sharding.param_shardings(params, mesh, fsdp="data"))
      >>> tx = layca_optax.layca(0.1, base=optax.scale_by_adam())
      >>> shardings = layca_optax.sharding.state_shardings(tx, params)
      >>> state = jax.jit(tx.init, out_shardings=shardings)(params)

    References:
      Rajbhandari et al., `ZeRO: memory optimizations toward training
      trillion parameter models <https://arxiv.org/abs/1910.02054>`_, 2020
      (the sharded optimizer state that FSDP follows).
    """
    meshes = {
        leaf.sharding.mesh
        for leaf in jax.tree.leaves(params)
        if isinstance(getattr(leaf, "sharding", None), NamedSharding)
    }
    if len(meshes) != 1:
        raise ValueError(
            f"{checks.arg('params')} must hold arrays placed with "
            f"NamedSharding on one mesh, found {len(meshes)} meshes."
        )
    (mesh,) = meshes
    explicit = jax.sharding.Mesh(
        mesh.devices,
        mesh.axis_names,
        axis_types=(jax.sharding.AxisType.Explicit,) * len(mesh.axis_names),
    )

    def spec(x: Any) -> PartitionSpec:
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.spec
        return PartitionSpec()

    def typed(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(
            jnp.shape(x), x.dtype, sharding=NamedSharding(explicit, spec(x))
        )

    try:
        traced = jax.jit(tx.init).trace(jax.tree.map(typed, params))
    except Exception as err:  # e.g. a reshape that explicit types refuse
        raise ValueError(
            f"{checks.arg('tx')}: tracing `tx.init` with the params' "
            f"shardings as explicit types failed ({type(err).__name__}); "
            "give `jax.jit(tx.init, out_shardings=...)` the shardings by "
            "hand."
        ) from err
    return jax.tree.map(lambda s: NamedSharding(mesh, spec(s)), traced.out_info)
