"""Expert parallelism and replicated leaves, for ``_worker.py``.

- ``moe``: a mixture of experts whose stacked expert kernels are split over
  the ``expert`` mesh axis, which spans the two processes; Layca's ``axis``
  makes each expert a layer of its own (one norm per expert).
- ``replicated``: inside ``jax.shard_map``, leaves replicated over one or
  both mesh axes (one of which spans the processes); the per-layer sums
  that ``psum_layer_sums`` completes must count each value once, which
  ``track_rotation``'s norms (absolute, unlike the angles) show.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _cases import (
    call,
    layca_adam,
    local_share,
    make_mesh,
    put,
    quadratic_grads,
    random_tree,
    run_steps,
    to_host,
)
from jax.sharding import NamedSharding, PartitionSpec as P

import layca_optax


EXPERTS, WIDTH, HIDDEN, BATCH = 4, 8, 16, 32
MOE_SHAPES = {
    "router": {"kernel": (WIDTH, EXPERTS)},
    "experts": {
        "w_in": (EXPERTS, WIDTH, HIDDEN),
        "w_out": (EXPERTS, HIDDEN, WIDTH),
    },
}
# One layer per expert: the norms reduce over each expert's own axes.
EXPERT_AXIS = {"router": None, "experts": (1, 2)}


def moe_forward(params: Any, x: jax.Array) -> jax.Array:
    """Top-1 gated experts (dense dispatch: each expert sees every token
    and the gate keeps its tokens' outputs)."""
    logits = x @ params["router"]["kernel"]
    gate = jax.nn.one_hot(jnp.argmax(logits, -1), EXPERTS)
    gate = gate * jax.nn.softmax(logits)
    w_in, w_out = params["experts"]["w_in"], params["experts"]["w_out"]
    hidden = jax.nn.relu(jnp.einsum("bd,edh->beh", x, w_in))
    return jnp.einsum("be,beh,ehd->bd", gate, hidden, w_out)


def moe_grads(params: Any, x: jax.Array, y: jax.Array) -> Any:
    """The gradients of the mean squared error."""
    loss = lambda p: jnp.mean((moe_forward(p, x) - y) ** 2)
    return jax.grad(loss)(params)


def moe_data() -> tuple[Any, np.ndarray, np.ndarray]:
    """Initial params, inputs and targets, as NumPy."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, WIDTH)).astype(np.float32)
    y = rng.normal(size=(BATCH, WIDTH)).astype(np.float32)
    return random_tree(3, MOE_SHAPES), x, y


def moe() -> tuple[dict[str, Any], dict[str, Any]]:
    """Layca + Adam steps with the experts split over processes."""
    mesh = make_mesh((2, 2), ("expert", "data"))
    spec = {
        "router": {"kernel": P()},
        "experts": {"w_in": P("expert"), "w_out": P("expert")},
    }
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), spec)
    tree, x, y = moe_data()
    params = put(tree, shardings)
    batch = NamedSharding(mesh, P("data"))
    x, y = put((x, y), (batch, batch))
    tx = layca_adam(EXPERT_AXIS)
    state_shardings = layca_optax.sharding.state_shardings(tx, params)
    state = call(tx.init, params, out_shardings=state_shardings)
    (params, state), metrics = call(
        run_steps(tx, moe_grads, axis=EXPERT_AXIS),
        params,
        state,
        x,
        y,
        out_shardings=((shardings, state_shardings), NamedSharding(mesh, P())),
    )
    facts = {"local_share": local_share({"params": params})}
    results = {"params": params, "state": state, "metrics": metrics}
    return to_host(results), facts


def moe_unstacked() -> dict[str, Any]:
    """The same steps on one device with each expert a leaf of its own
    and ``axis=None``: what "one layer per expert" means."""
    tree, x, y = moe_data()
    experts = tree["experts"]
    unstacked = {"router": tree["router"]} | {
        f"expert_{e}": {
            "w_in": experts["w_in"][e],
            "w_out": experts["w_out"][e],
        }
        for e in range(EXPERTS)
    }

    def stacked(p: Any) -> Any:
        w = lambda name: jnp.stack([p[f"expert_{e}"][name] for e in range(4)])
        return {
            "router": p["router"],
            "experts": {n: w(n) for n in ("w_in", "w_out")},
        }

    grads = lambda p, x, y: jax.grad(
        lambda p: jnp.mean((moe_forward(stacked(p), x) - y) ** 2)
    )(p)
    tx = layca_adam()
    device = jax.local_devices()[0]
    params, x, y = jax.device_put((unstacked, x, y), device)
    (params, _), metrics = call(
        run_steps(tx, grads), params, call(tx.init, params), x, y
    )
    return to_host({"params": params, "metrics": metrics})


REPLICATED = {  # on a ("data", "model") mesh, "data" spanning the processes
    "rows": ((8, 6), P("data", None)),  # replicated over "model"
    "cols": ((6, 8), P(None, "model")),  # replicated over "data"
    "whole": ((4, 6), P()),  # replicated over both
    "split": ((8, 8), P("data", "model")),
}


def replicated() -> dict[str, Any]:
    """Steps inside ``jax.shard_map`` with ``psum_layer_sums`` over both
    axes, and the same steps unsharded on one local device."""
    mesh = make_mesh((2, 2), ("data", "model"))
    shapes = {k: {"kernel": shape} for k, (shape, _) in REPLICATED.items()}
    specs = {k: {"kernel": spec} for k, (_, spec) in REPLICATED.items()}
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    tree, targets = random_tree(4, shapes), random_tree(5, shapes)
    tx = layca_adam()
    params = put(tree, shardings)
    state_shardings = layca_optax.sharding.state_shardings(tx, params)
    state = call(tx.init, params, out_shardings=state_shardings)
    state_specs = jax.tree.map(lambda s: s.spec, state_shardings)
    run = jax.shard_map(
        run_steps(tx, quadratic_grads, psum=("data", "model")),
        mesh=mesh,
        in_specs=(specs, state_specs, specs),
        out_specs=((specs, state_specs), P()),
    )
    sharded = call(run, params, state, put(targets, shardings))
    if jax.process_count() > 1:  # the reference's job
        return to_host({"sharded": sharded})
    unsharded = call(
        run_steps(tx, quadratic_grads), tree, call(tx.init, tree), targets
    )
    return to_host({"sharded": sharded, "unsharded": unsharded})
