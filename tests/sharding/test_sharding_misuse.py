"""Misuse of the sharding recipes (sharding/_shardings) and of the
shard_map hook (``psum_layer_sums``, _shard_map): an error naming the
function, the argument and the value."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import layca_optax
from tests.sharding.test_sharding import mesh_of, random_tree


SMALL = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fsdp": "batch"}, r"param_shardings\(fsdp='batch'\).*'batch'"),
        ({"tensor": ("x",)}, r"param_shardings\(tensor=\('x',\)\).*'x'"),
        ({"fsdp": ""}, r"param_shardings\(fsdp=\.\.\.\).*''"),
        (
            {"fsdp": "data", "tensor": "data"},
            r"param_shardings\(fsdp='data', tensor='data'\)",
        ),
    ],
)
def test_param_shardings_bad_axis(kwargs, pattern):
    mesh = mesh_of((4, 2), ("data", "model"))
    with pytest.raises(ValueError, match=pattern):
        layca_optax.sharding.param_shardings(
            random_tree(0, "float32"), mesh, **kwargs
        )


def test_state_shardings_needs_one_mesh():
    tx = layca_optax.layca(0.1)
    with pytest.raises(ValueError, match=r"state_shardings\(params=\.\.\.\)"):
        layca_optax.sharding.state_shardings(tx, random_tree(0, "float32"))


def test_psum_layer_sums_unknown_axis():
    mesh = mesh_of((2, 4), ("data", "model"))
    tx = layca_optax.with_psum_layer_sums(layca_optax.layca(0.1), "batch")
    w = {"w": jnp.ones((8, 4))}
    state = tx.init(w)  # outside shard_map: a plain init
    step = jax.shard_map(
        lambda p, s: tx.update(p, s, p)[0],
        mesh=mesh,
        in_specs=(P("data"), P()),
        out_specs=P("data"),
    )
    with pytest.raises(
        ValueError,
        match=r"with_psum_layer_sums\(axis_names=\('batch',\)\).*'batch'.*"
        r"\('data', 'model'\)",
    ):
        jax.jit(step)(w, state)

    def metrics(p):
        with layca_optax.psum_layer_sums(("data", "x")):
            return layca_optax.rotation_metrics(p, p)

    fn = jax.shard_map(metrics, mesh=mesh, in_specs=P("data"), out_specs=P())
    with pytest.raises(
        ValueError, match=r"psum_layer_sums\(axis_names=\('data', 'x'\)\).*'x'"
    ):
        jax.jit(fn)(w)


@pytest.mark.parametrize("names", ["", (), ("data", "data"), 3, ("a", None)])
def test_psum_layer_sums_bad_names(names):
    with pytest.raises(ValueError, match=r"psum_layer_sums\(axis_names="):
        with layca_optax.psum_layer_sums(names):
            pass
    with pytest.raises(ValueError, match=r"with_psum_layer_sums\(axis_names="):
        layca_optax.with_psum_layer_sums(layca_optax.layca(0.1), names)


@pytest.mark.parametrize("mesh", [3, "data", None, jax.devices()])
def test_param_shardings_mesh(mesh):
    with pytest.raises(
        TypeError,
        match=r"`param_shardings\(mesh=\.\.\.\)` must be a jax\.sharding\.Mesh",
    ):
        layca_optax.sharding.param_shardings(SMALL, mesh, fsdp="data")
    with pytest.raises(TypeError, match=r"`param_shardings\(mesh=\.\.\.\)`"):
        layca_optax.sharding.param_shardings(SMALL, mesh=mesh)
