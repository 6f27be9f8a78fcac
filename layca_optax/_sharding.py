"""Layca on device meshes: sharding recipes and per-layer sums in shard_map.

Under ``jax.jit`` with arrays placed by ``NamedSharding`` nothing is needed:
the compiler splits each per-layer sum into local sums and an all-reduce of
the results (scalars, or one value per slice with ``axis``). Inside
``jax.shard_map`` each device sees its shard only, and the reductions of
this package psum their partial results over the mesh axes named with
:func:`psum_layer_sums` (or :func:`with_psum_layer_sums`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec


AxisNames: TypeAlias = str | Sequence[str]
"""One mesh axis name, or a sequence of distinct names."""

# (axis names, caller) while inside `psum_layer_sums`; read at trace time.
_PSUM: contextvars.ContextVar[tuple[tuple[str, ...], str] | None] = (
    contextvars.ContextVar("layca_optax_psum_axes", default=None)
)


def _axis_names(axis_names: Any, caller: str, arg: str) -> tuple[str, ...]:
    """``axis_names`` as a tuple of distinct strings, or ``ValueError``."""
    names = (axis_names,) if isinstance(axis_names, str) else axis_names
    try:
        names = tuple(names)
    except TypeError:
        names = ()
    ok = all(isinstance(n, str) and n for n in names)
    if not names or not ok or len(set(names)) != len(names):
        raise ValueError(
            f"`{caller}({arg}=...)` must be a mesh axis name or a sequence "
            f"of distinct names, got {axis_names!r}."
        )
    return names


def _varying(x: Any) -> frozenset | None:
    """The manual mesh axes ``x`` varies over (None: JAX does not say)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)  # jax 0.6 to 0.9
    if vma is None:  # jax 0.10
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    return None if vma is None else frozenset(vma)


def _manual_names() -> tuple[str, ...]:
    """The mesh axes the sums of :func:`psum_layer_sums` run over here.

    Outside ``jax.shard_map`` (no manual axes) there are none: arrays are
    global and the compiler completes the sums. Inside, a name that is not
    an axis of the mesh raises ``ValueError``; axes left to the compiler
    (``shard_map(axis_names=...)`` leaves them automatic) are skipped.
    """
    context = _PSUM.get()
    if context is None:
        return ()
    names, caller = context
    mesh = jax.sharding.get_abstract_mesh()
    manual = tuple(getattr(mesh, "manual_axes", ()))
    if not manual:
        return ()
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(
                f"`{caller}(axis_names={names!r})`: {name!r} is not an axis "
                f"of the enclosing jax.shard_map's mesh, whose axes are "
                f"{tuple(mesh.axis_names)!r}."
            )
    return tuple(n for n in names if n in manual)


def _mesh_axes_of(partial: jax.Array) -> tuple[str, ...]:
    """The named manual axes ``partial`` is a partial result over."""
    names = _manual_names()
    if not names:
        return ()
    varying = _varying(partial)
    # With check_vma=False (or an older JAX) nothing is known to vary: every
    # named axis is reduced over (layers must then be split over all).
    tracked = all(
        name in (_varying(jax.lax.axis_index(name)) or ()) for name in names
    )
    if varying is None or not tracked:
        return names
    return tuple(n for n in names if n in varying)


def complete_sum(partial: jax.Array) -> jax.Array:
    """A per-layer sum over the local shard, completed over the mesh.

    The identity outside :func:`psum_layer_sums`; inside it (within
    ``jax.shard_map``), ``jax.lax.psum`` over the named axes that
    ``partial`` varies over (a leaf replicated over an axis is not counted
    twice). Every per-layer reduction of this package goes through it.
    """
    axes = _mesh_axes_of(partial)
    return jax.lax.psum(partial, axes) if axes else partial


@contextlib.contextmanager
def _summing_over(names: tuple[str, ...], caller: str) -> Iterator[None]:
    """Sets the axes of :func:`complete_sum`; checks them if in shard_map."""
    token = _PSUM.set((names, caller))
    try:
        _manual_names()  # a bad name raises now, not at the first sum
        yield
    finally:
        _PSUM.reset(token)


@contextlib.contextmanager
def psum_layer_sums(axis_names: AxisNames) -> Iterator[None]:
    """Completes Layca's per-layer sums over mesh axes, inside ``shard_map``.

    Inside ``jax.shard_map`` each device holds a shard of each layer, so a
    layer's norm needs the sum of the devices' partial sums. Within this
    context (entered while tracing the ``shard_map``-ped function; also a
    decorator), every per-layer reduction of :func:`layca`, its primitives,
    :func:`track_rotation`, :func:`rotation_metrics` and the other metrics
    is followed by ``jax.lax.psum`` over those of ``axis_names`` that the
    partial result varies over: one scalar per layer (or per slice with
    ``axis``) crosses the mesh, never a parameter-sized array. The rest of
    the step is elementwise on the local shards.

    - With ``axis=None`` (one norm per leaf) name every mesh axis that
      shards some layer; leaves replicated over an axis are not summed over
      it (JAX tracks this with ``check_vma=True``, the default; with
      ``check_vma=False`` every layer must be split over every named axis).
    - With ``axis`` (one norm per slice), name only the axes that shard
      *reduced* dimensions; an axis that shards the slices themselves (the
      output axis under tensor parallelism with :func:`fan_in_axes`) must
      not be named. Where layers differ, wrap each group with
      :func:`with_psum_layer_sums` under ``optax.partition``.
    - Outside ``jax.shard_map`` it does nothing: under ``jax.jit`` with
      ``NamedSharding`` the compiler completes the sums itself.

    ``track_rotation(reference="sketch")`` hashes each weight's index in
    its local shard, so it is not supported inside ``jax.shard_map``.

    Args:
      axis_names: a mesh axis name or a sequence of distinct names, axes of
        the enclosing ``jax.shard_map``'s mesh (checked while tracing:
        another name raises ``ValueError``).

    Yields:
      Nothing; the setting lasts until the context exits.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> import layca_optax
      >>> mesh = Mesh(jax.devices()[:1], ("data",))
      >>> tx = layca_optax.layca(0.5)
      >>> params = {"w": jnp.array([[1.0, 0.0]])}
      >>> state = tx.init(params)
      >>> def step(params, grads, state):
      ...   with layca_optax.psum_layer_sums("data"):
      ...     updates, state = tx.update(grads, state, params)
      ...   return optax.apply_updates(params, updates), state
      >>> step = jax.jit(jax.shard_map(
      ...     step, mesh=mesh, in_specs=(P("data"), P("data"), P()),
      ...     out_specs=(P("data"), P())))
      >>> new, state = step(params, {"w": jnp.array([[0.0, -1.0]])}, state)
      >>> [round(float(x), 5) for x in new["w"].ravel()]
      [0.89443, 0.44721]

    References:
      JAX, `Manual parallelism with shard_map
      <https://docs.jax.dev/en/latest/notebooks/shard_map.html>`_.
    """
    names = _axis_names(axis_names, "psum_layer_sums", "axis_names")
    with _summing_over(names, "psum_layer_sums"):
        yield


def with_psum_layer_sums(
    tx: optax.GradientTransformation, axis_names: AxisNames
) -> optax.GradientTransformationExtraArgs:
    """``tx`` with its per-layer sums completed over mesh axes in shard_map.

    Runs ``tx.init`` and ``tx.update`` within :func:`psum_layer_sums`
    (see there for which axes to name). Use it where the call to ``update``
    is not yours (e.g. ``nnx.Optimizer``), or under ``optax.partition`` to
    give groups of layers different axes. Outside ``jax.shard_map`` it
    behaves as ``tx``.

    Args:
      tx: any optax transformation, e.g. :func:`layca`, possibly chained
        with :func:`track_rotation`.
      axis_names: a mesh axis name or a sequence of distinct names.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import optax
      >>> import layca_optax
      >>> tx = layca_optax.with_psum_layer_sums(
      ...     optax.chain(layca_optax.layca(0.1),
      ...                 layca_optax.track_rotation()),
      ...     ("data", "model"))

    References:
      JAX, `Manual parallelism with shard_map
      <https://docs.jax.dev/en/latest/notebooks/shard_map.html>`_.
    """
    caller = "with_psum_layer_sums"
    names = _axis_names(axis_names, caller, "axis_names")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(
            f"`{caller}(tx=...)` must be an optax GradientTransformation, "
            f"got {tx!r}."
        )
    inner = optax.with_extra_args_support(tx)

    def init_fn(params):
        with _summing_over(names, caller):
            return inner.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        with _summing_over(names, caller):
            return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _mesh_entry(
    names: Any, mesh: Any, arg: str
) -> tuple[Any, int, tuple[str, ...]]:
    """A ``PartitionSpec`` entry for ``names``, its device count, its names."""
    if names is None:
        return None, 1, ()
    caller = "param_shardings"
    tup = _axis_names(names, caller, arg)
    for name in tup:
        if name not in mesh.axis_names:
            raise ValueError(
                f"`{caller}({arg}={names!r})`: {name!r} is not an axis of "
                f"the mesh, whose axes are {tuple(mesh.axis_names)!r}."
            )
    size = math.prod(mesh.shape[n] for n in tup)
    return (tup[0] if len(tup) == 1 else tup), size, tup


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
      >>> shardings = layca_optax.param_shardings(params, mesh, fsdp="data")
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
    fsdp_entry, fsdp_size, fsdp_names = _mesh_entry(fsdp, mesh, "fsdp")
    tensor_entry, tensor_size, tensor_names = _mesh_entry(
        tensor, mesh, "tensor"
    )
    if set(fsdp_names) & set(tensor_names):
        raise ValueError(
            f"`param_shardings(fsdp={fsdp!r}, tensor={tensor!r})` must use "
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
      ...     params, layca_optax.param_shardings(params, mesh, fsdp="data"))
      >>> tx = layca_optax.layca(0.1, base=optax.scale_by_adam())
      >>> shardings = layca_optax.state_shardings(tx, params)
      >>> state = jax.jit(tx.init, out_shardings=shardings)(params)

    References:
      Rajbhandari et al., `ZeRO: memory optimizations toward training
      trillion parameter models <https://arxiv.org/abs/1910.02054>`_, 2020
      (the sharded optimizer state that FSDP follows).
    """
    caller = "state_shardings"
    meshes = {
        leaf.sharding.mesh
        for leaf in jax.tree.leaves(params)
        if isinstance(getattr(leaf, "sharding", None), NamedSharding)
    }
    if len(meshes) != 1:
        raise ValueError(
            f"`{caller}(params=...)` must hold arrays placed with "
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
            f"`{caller}(tx=...)`: tracing `tx.init` with the params' "
            f"shardings as explicit types failed ({type(err).__name__}); "
            "give `jax.jit(tx.init, out_shardings=...)` the shardings by "
            "hand."
        ) from err
    return jax.tree.map(lambda s: NamedSharding(mesh, spec(s)), traced.out_info)
