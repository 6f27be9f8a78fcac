"""Checkpoint and resume: the state is arrays only; resuming is bit-exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


ocp = pytest.importorskip("orbax.checkpoint")

STEPS, STOP = 8, 3


def schedule():
    return optax.piecewise_constant_schedule(0.1, {2: 0.5, 5: 0.5})


def optimizers():
    return {
        "schedule": layca_optax.layca(
            schedule(), optax.trace(0.9), other=optax.adam(1e-2)
        ),
        "chain": layca_optax.layca(schedule(), optax.trace(0.9), fused=False),
        "multisteps": optax.MultiSteps(
            layca_optax.layca(schedule(), optax.scale_by_adam()),
            every_k_schedule=2,
        ),
        "track_rotation": optax.chain(
            layca_optax.layca(schedule(), other=optax.sgd(0.1)),
            layca_optax.track_rotation(reference="bfloat16"),
        ),
        "injected": optax.inject_hyperparams(layca_optax.layca)(
            learning_rate=schedule()
        ),
    }


def params():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
            "bias": jnp.zeros(4),
        },
        "Conv_0": {
            "kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.bfloat16)
        },
    }


def grads(t):
    rng = np.random.default_rng(100 + t)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params()
    )


def make_step(tx):
    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return step


@pytest.mark.parametrize("name", sorted(optimizers()))
@pytest.mark.slow  # 18 s on 2 cores: out of `make test-fast`
def test_resume_from_an_orbax_checkpoint_is_bit_identical(name, tmp_path):
    tx = optimizers()[name]
    step = make_step(tx)
    p, s = params(), tx.init(params())
    # Arrays only (no Python flags or counters), in a fixed structure.
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(s))
    structure = jax.tree.structure(s)
    for t in range(STEPS):
        p, s = step(p, s, grads(t))
    uninterrupted = p
    assert jax.tree.structure(s) == structure

    p, s = params(), tx.init(params())
    for t in range(STOP):
        p, s = step(p, s, grads(t))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", {"params": p, "opt_state": s})
        ckpt.wait_until_finished()
    del p, s
    # A fresh process would rebuild the target from tx.init.
    target = {"params": params(), "opt_state": tx.init(params())}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "ckpt", abstract)
    p, s = restored["params"], restored["opt_state"]
    assert jax.tree.structure(s) == jax.tree.structure(target["opt_state"])
    for t in range(STOP, STEPS):
        p, s = step(p, s, grads(t))
    for a, b in zip(
        jax.tree.leaves(p), jax.tree.leaves(uninterrupted), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
