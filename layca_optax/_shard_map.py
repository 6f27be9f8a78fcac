"""Per-layer sums inside ``jax.shard_map``: psum over the named mesh axes.

Inside ``jax.shard_map`` each device sees its shard only, and the
reductions of this package psum their partial results over the mesh axes
named with :func:`psum_layer_sums` (or :func:`with_psum_layer_sums`).
Under ``jax.jit`` with ``NamedSharding`` nothing is needed (see
``_sharding.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import jax
import optax

from layca_optax import _checks as checks


AxisNames: TypeAlias = str | Sequence[str]
"""One mesh axis name, or a sequence of distinct names."""

# (axis names, owner) while inside `psum_layer_sums`: read at trace time,
# when the public function that set them (the owner) is no longer running.
_PSUM: contextvars.ContextVar[tuple[tuple[str, ...], str] | None] = (
    contextvars.ContextVar("layca_optax_psum_axes", default=None)
)


def check_axis_names(
    axis_names: Any, owner: str, name: str = "axis_names"
) -> tuple[str, ...]:
    """``axis_names`` as a tuple of distinct strings, or ``ValueError``."""
    names = (axis_names,) if isinstance(axis_names, str) else axis_names
    try:
        names = tuple(names)
    except TypeError:
        names = ()
    ok = all(isinstance(n, str) and n for n in names)
    if not names or not ok or len(set(names)) != len(names):
        raise ValueError(
            f"`{owner}({name}=...)` must be a mesh axis name or a sequence "
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


def summing_context() -> tuple[tuple[str, ...], str] | None:
    """The axis names (and owner) of the enclosing
    :func:`psum_layer_sums`, or None: hashable, a key for cached traces."""
    return _PSUM.get()


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
    names, owner = context
    mesh = jax.sharding.get_abstract_mesh()
    manual = tuple(getattr(mesh, "manual_axes", ()))
    if not manual:
        return ()
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(
                f"`{owner}(axis_names={names!r})`: {name!r} is not an axis "
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


def complete_sum(partial: Any) -> Any:
    """A per-layer sum over the local shard, completed over the mesh.

    The identity outside :func:`psum_layer_sums`; inside it (within
    ``jax.shard_map``), ``jax.lax.psum`` over the named axes that
    ``partial`` varies over (a leaf replicated over an axis is not counted
    twice). Every per-layer reduction of this package goes through it.
    ``partial`` may be a tuple of one layer's sums: those that vary over
    the same axes are completed by one ``psum`` (one all-reduce).
    """
    if not isinstance(partial, tuple):
        axes = _mesh_axes_of(partial)
        return jax.lax.psum(partial, axes) if axes else partial
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, x in enumerate(partial):
        groups.setdefault(_mesh_axes_of(x), []).append(i)
    out = list(partial)
    for axes, idx in groups.items():
        if axes:
            done = jax.lax.psum(tuple(partial[i] for i in idx), axes)
            for i, x in zip(idx, done, strict=True):
                out[i] = x
    return tuple(out)


@contextlib.contextmanager
def _summing_over(names: tuple[str, ...], owner: str) -> Iterator[None]:
    """Sets the axes of :func:`complete_sum` (``owner``: the public function
    named in errors); checks them if in shard_map."""
    token = _PSUM.set((names, owner))
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
    names = check_axis_names(axis_names, "psum_layer_sums")
    with _summing_over(names, "psum_layer_sums"):
        yield


@checks.public
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
    names = check_axis_names(axis_names, "with_psum_layer_sums")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(
            "`with_psum_layer_sums(tx=...)` must be an optax "
            f"GradientTransformation, got {tx!r}."
        )
    inner = optax.with_extra_args_support(tx)

    def init_fn(params):
        with _summing_over(names, "with_psum_layer_sums"):
            return inner.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        with _summing_over(names, "with_psum_layer_sums"):
            return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
