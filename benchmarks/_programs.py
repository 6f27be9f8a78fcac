"""The compiled programs that ``tpu_cost.py`` and ``gpu_cost.py`` read.

One optimizer step (``update`` + ``apply_updates``, params and state
donated) or ``rotation_metrics``, compiled for compile-only devices, with
the sharding recipes of the multi-device runs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Sharding

import layca_optax
from layca_optax._io import atomic_write_text


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import _step_fn  # noqa: E402


# ``layca_optax.sharding.param_shardings`` keyword arguments, on a
# ("data", "model")
# mesh: FSDP over both axes, tensor parallelism over "model", and both.
RECIPES: dict[str, dict] = {
    "fsdp": {"fsdp": ("data", "model")},
    "tensor": {"tensor": "model"},
    "fsdp+tensor": {"fsdp": "data", "tensor": "model"},
}


def structs(tree, shardings):
    """ShapeDtypeStructs of ``tree``, with one sharding or a tree of them."""
    if isinstance(shardings, Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    struct = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    return jax.tree.map(struct, tree, shardings)


def float32_params(shapes: dict, shardings) -> tuple[dict, int]:
    """Float32 ShapeDtypeStructs of a flat dict of ``shapes``, with one
    sharding or a dict of them, and their bytes on one device."""
    params = structs(
        {k: jax.ShapeDtypeStruct(v, np.float32) for k, v in shapes.items()},
        shardings,
    )
    param_bytes = sum(
        4 * math.prod(p.sharding.shard_shape(p.shape)) for p in params.values()
    )
    return params, param_bytes


def compile_program(tx, params, shardings) -> tuple:
    """Compiles ``tx``'s step (params, state donated) or rotation_metrics.

    ``tx`` None: ``rotation_metrics(params, params)``. ``shardings``: one
    device's, or the params' NamedShardings (then the state gets
    ``state_shardings``, and both are kept on output). Returns the
    compiled program and the seconds that lowering and compiling took.
    """
    fn: Any = _step_fn(tx)
    donate: tuple[int, ...] = (0, 1)
    kwargs: dict = {}
    args: tuple = (params, params)
    if tx is None:  # rotation_metrics(params, init_params)
        fn, donate = layca_optax.rotation_metrics, ()
    else:
        state, state_sh = jax.eval_shape(tx.init, params), shardings
        if not isinstance(shardings, Sharding):
            state_sh = layca_optax.sharding.state_shardings(tx, params)
            kwargs = {"out_shardings": (shardings, state_sh)}
        args = (params, structs(state, state_sh), params)
    start = time.perf_counter()
    jitted = jax.jit(fn, donate_argnums=donate, **kwargs)
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def finish(report: dict, start: float, out: str | None) -> int:
    """Prints the seconds since ``start``; writes ``report`` to ``out`` (a
    JSON file) if given. Returns 0, the exit status."""
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if out:
        atomic_write_text(out, json.dumps(report, indent=2))
    return 0
