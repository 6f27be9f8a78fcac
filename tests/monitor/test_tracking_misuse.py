"""Misuse of `track_rotation` and `tracked_metrics` (monitor/_tracking): a
``ValueError`` naming the function, the argument and the value, or a NaN
where nothing can be checked at trace time.

(tests/monitor/test_tracking.py::test_errors holds the older cases.)
"""

import jax
import jax.numpy as jnp
import pytest

import layca_optax


W = jnp.ones((3, 4))


@pytest.mark.parametrize("reference", ["exact", "bfloat16"])
def test_tracked_reference_of_another_shape_is_refused(reference):
    tx = layca_optax.track_rotation(reference=reference)
    state = tx.init({"k": W})
    other = {"k": jnp.ones((4, 3))}
    with pytest.raises(ValueError, match=r"track_rotation.*holds \(3, 4\)"):
        jax.jit(tx.update)(other, state, other)


def test_tracked_sketch_of_another_size_reads_nan():
    # A sketch has no shape to check at trace time: the layer's number of
    # entries is stored with it, and a layer of another size reads NaN.
    tx = layca_optax.track_rotation(reference="sketch")
    state = tx.init({"k": W})
    same, other = {"k": W * 2}, {"k": jnp.ones((5, 4))}
    assert (
        float(jax.jit(tx.update)(same, state, same)[1].cosine_distance["k"])
        == 0
    )
    cos = jax.jit(tx.update)(other, state, other)[1].cosine_distance["k"]
    assert jnp.isnan(cos)


def test_complex_layers_are_refused():
    c = jnp.ones((3, 4), jnp.complex64)
    with pytest.raises(ValueError, match=r"'k' has dtype complex64.*real"):
        layca_optax.track_rotation().init({"k": c})


def test_tracked_metrics_prefix_must_be_a_str():
    state = layca_optax.track_rotation().init({"k": W})
    with pytest.raises(
        ValueError,
        match=r"`tracked_metrics\(prefix=...\)` must be a str.*got 3",
    ):
        layca_optax.tracked_metrics(state, prefix=3)


@pytest.mark.parametrize(
    "key, got",
    [
        (3, "got 3"),
        (jnp.ones(3), r"got an array of shape \(3,\) and dtype float32"),
        (jax.random.split(jax.random.key(0)), r"got an array of \(2,\) keys"),
    ],
    ids=["int", "float-array", "two-keys"],
)
def test_sketch_key_must_be_one_prng_key(key, got):
    with pytest.raises(
        ValueError,
        match=rf"`track_rotation\(key=...\)` must be one JAX PRNG .*{got}",
    ):
        layca_optax.track_rotation(reference="sketch", key=key)


def test_sketch_takes_a_legacy_key():
    layca_optax.track_rotation(reference="sketch", key=jax.random.PRNGKey(1))
