"""The cases of the multi-process tests, run by ``_worker.py``.

Each case builds its global arrays from NumPy (the same on every process:
``jax.make_array_from_callback`` keeps each process's shards), runs a few
jitted steps on a 4-device mesh and returns host NumPy results
(``process_allgather``: every process gets the whole arrays), so that a run
over two processes compares with a run in one process leaf by leaf. Nothing
here runs at import (pytest imports it with ``--doctest-modules``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

import layca_optax


STEPS = 5
SHAPES = {
    "Conv_0": {"kernel": (3, 8, 16)},
    "Dense_0": {"kernel": (64, 32), "bias": (32,)},
}
# recipe: (mesh shape, mesh axes, fsdp axis, tensor axis): each over the 4
# devices, so that every split layer is split across the two processes
# (process 0 holds devices 0 and 1). The first axis of a 2-D mesh spans the
# processes.
RECIPES = {
    "fsdp": ((4,), ("data",), "data", None),
    "tensor": ((4,), ("model",), None, "model"),
}


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> Any:
    """A mesh of every device of the job (automatic axes)."""
    devices = np.array(jax.devices()).reshape(shape)
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.sharding.Mesh(devices, names, axis_types=auto)


def random_tree(seed: int, shapes: Any = None) -> Any:
    """Float32 NumPy arrays of ``shapes`` (default ``SHAPES``)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: rng.normal(size=s).astype(np.float32),
        SHAPES if shapes is None else shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def put(tree: Any, shardings: Any) -> Any:
    """Global arrays from host arrays: each process places its shards."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(
            x.shape, s, lambda index: x[index]
        ),
        tree,
        shardings,
    )


def to_host(tree: Any) -> Any:
    """The whole arrays as NumPy, on every process (a local array as it
    is, a global one gathered from the processes)."""

    def whole(x: jax.Array) -> np.ndarray:
        if x.is_fully_addressable:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(whole, tree)


def local_share(tree: Any) -> dict[str, float]:
    """{leaf path: the share of its elements on this process's devices}:
    below 1 where a leaf is split across the processes."""

    def share(x: jax.Array) -> float:
        held = {
            tuple(
                range(*i.indices(n))
                for i, n in zip(s.index, x.shape, strict=True)
            ): s.data.size
            for s in x.addressable_shards
        }
        return sum(held.values()) / max(x.size, 1)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): share(x)
        for path, x in flat
    }


def call(fn: Any, *args: Any, **jit_kwargs: Any) -> Any:
    """``jax.jit(fn, **jit_kwargs)(*args)``, compiled at the lowest LLVM
    optimization level (the same program, compiled several times faster)."""
    lowered = jax.jit(fn, **jit_kwargs).lower(*args)
    return lowered.compile({"xla_backend_optimization_level": 0})(*args)


def run_steps(
    tx: Any, grad_fn: Any, *, axis: Any = None, psum: Any = None
) -> Any:
    """``STEPS`` updates under ``lax.scan``; per step ``rotation_metrics``
    against the initial params and ``tracked_metrics`` of the state.

    ``psum``: inside ``jax.shard_map``, the mesh axes of
    ``psum_layer_sums`` around the update and the metrics.
    """

    def summing() -> Any:
        if psum is None:
            return contextlib.nullcontext()
        return layca_optax.psum_layer_sums(psum)

    def run(params, state, *data):
        def step(carry, _):
            p, s = carry
            grads = grad_fn(p, *data)
            with summing():
                updates, s = tx.update(grads, s, p)
                new = optax.apply_updates(p, updates)
                metrics = layca_optax.rotation_metrics(new, params, axis=axis)
            return (new, s), metrics | layca_optax.tracked_metrics(s)

        return jax.lax.scan(step, (params, state), None, length=STEPS)

    return run


def quadratic_grads(params: Any, targets: Any) -> Any:
    """The gradients of ``||w - t||^2 / 2``."""
    return jax.tree.map(lambda w, t: w - t, params, targets)


def layca_adam(axis: Any = None) -> optax.GradientTransformation:
    """Layca with Adam, monitored with ``track_rotation``."""
    return optax.chain(
        layca_optax.layca(
            0.02,
            base=optax.scale_by_adam(),
            other=optax.adam(1e-3),
            axis=axis,
        ),
        layca_optax.track_rotation(axis=axis, reference="exact"),
    )


def train(recipe: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``STEPS`` of Layca + Adam with a sharding recipe.

    Returns:
      (results, facts, (params, state)): results as NumPy trees, facts for
      the JSON record, and the sharded final params and state.
    """
    shape, names, fsdp, tensor = RECIPES[recipe]
    mesh = make_mesh(shape, names)
    shardings = layca_optax.sharding.param_shardings(
        random_tree(0), mesh, fsdp=fsdp, tensor=tensor
    )
    params = put(random_tree(0), shardings)
    targets = put(random_tree(1), shardings)
    tx = layca_adam()
    state_shardings = layca_optax.sharding.state_shardings(tx, params)
    state = call(tx.init, params, out_shardings=state_shardings)
    (params, state), metrics = call(
        run_steps(tx, quadratic_grads),
        params,
        state,
        targets,
        out_shardings=(
            (shardings, state_shardings),
            NamedSharding(mesh, P()),
        ),
    )
    facts = {
        "specs": jax.tree.map(lambda s: str(s.spec), shardings),
        "local_share": local_share({"params": params, "state": state}),
    }
    results = {"params": params, "state": state, "metrics": metrics}
    return to_host(results), facts, (params, state)


def _same_shards(got: Any, want: Any) -> tuple[bool, bool, int]:
    """(same shardings, same addressable shards bit for bit, shards)."""
    shardings, shards, count = True, True, 0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        shardings &= a.sharding.is_equivalent_to(b.sharding, a.ndim)
        for x, y in zip(
            a.addressable_shards, b.addressable_shards, strict=True
        ):
            shards &= x.index == y.index and np.array_equal(x.data, y.data)
            count += 1
    return bool(shardings), bool(shards), count


def checkpoint(directory: str, params: Any, state: Any) -> dict[str, Any]:
    """Saves sharded params and state with Orbax (each process its
    shards), restores them as they were and the params resharded.

    Returns:
      Facts for the JSON record: whether the restored arrays have the
      saved shardings and shards, and whether the resharded params hold
      the same values.
    """
    import orbax.checkpoint as ocp

    target = {"params": params, "state": state}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory, target)
        ckpt.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    # The params onto another layout: tensor parallel over all devices.
    tensor = layca_optax.sharding.param_shardings(
        params, make_mesh((4,), ("model",)), tensor="model"
    )
    resharded = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        params,
        tensor,
    )
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(directory, abstract)
        both = {"params": resharded, "state": abstract["state"]}
        moved = ckpt.restore(directory, both)["params"]
    same_shardings, same_shards, count = _same_shards(restored, target)
    moved_values = jax.tree.map(np.array_equal, to_host(moved), to_host(params))
    return {
        "same_shardings": same_shardings,
        "same_shards": same_shards,
        "shards_checked": count,
        "resharded_equal": all(jax.tree.leaves(moved_values)),
        "resharded_specs": jax.tree.map(lambda s: str(s.spec), tensor),
    }
