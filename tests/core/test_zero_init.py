"""Zero-initialized layers: left unchanged, a warning at init, no NaN."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


def params():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
            "bias": jnp.zeros(4),
        },
        # A zero-initialized output projection, as in many transformers.
        "Dense_1": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)},
    }


def grads(t):
    rng = np.random.default_rng(100 + t)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params()
    )


def train(tx, p, steps=3):
    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    s = tx.init(p)
    for t in range(steps):
        p, s = step(p, s, grads(t))
    return p


@pytest.mark.parametrize("fused", [True, False])
def test_warns_at_init_and_leaves_the_zero_layer_unchanged(fused):
    tx = layca_optax.layca(0.1, optax.scale_by_adam(), fused=fused)
    with pytest.warns(UserWarning, match=r"zero: Dense_1/kernel\. "):
        tx.init(params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        p = train(tx, params())
    np.testing.assert_array_equal(p["Dense_1"]["kernel"], 0.0)
    assert np.isfinite(p["Dense_0"]["kernel"]).all()
    assert not np.array_equal(
        p["Dense_0"]["kernel"], params()["Dense_0"]["kernel"]
    )


def test_no_warning_for_traced_or_nonzero_params():
    # The split explicit (no layer/other warning): only the zero check here.
    tx = layca_optax.layca(
        0.1, mask=layca_optax.default_layer_mask, other=optax.set_to_zero()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.jit(tx.init)(params())  # nothing to inspect under jit
        p = params()
        p["Dense_1"]["kernel"] = jnp.ones((4, 3))
        tx.init(p)


def test_a_zero_slice_warns_with_axis():
    p = params()
    p["Dense_1"]["kernel"] = jnp.ones((4, 3)).at[:, 1].set(0.0)
    with pytest.warns(UserWarning, match="Dense_1/kernel"):
        layca_optax.layca(0.1, axis=0).init(p)


def test_routing_zero_layers_to_other_trains_them():
    p0 = params()
    # A mask computed once from the initial params: zero layers go to other.
    mask = jax.tree.map(lambda w: w.ndim >= 2 and bool(w.any()), p0)
    tx = layca_optax.layca(0.1, mask=mask, other=optax.adam(1e-2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = train(tx, p0)
    assert np.isfinite(p["Dense_1"]["kernel"]).all()
    assert np.abs(p["Dense_1"]["kernel"]).min() > 0  # trained by Adam
    n0 = np.linalg.norm(p0["Dense_0"]["kernel"])
    np.testing.assert_allclose(
        np.linalg.norm(p["Dense_0"]["kernel"]), n0, rtol=1e-5
    )


def test_with_optax_partition_under_jit_no_nan():
    labels = {
        "Dense_0": {"kernel": "layca", "bias": "sgd"},
        "Dense_1": {"kernel": "adam", "bias": "sgd"},
    }
    tx = optax.partition(
        {
            "layca": layca_optax.layca(0.1, optax.trace(0.9)),
            "adam": optax.adam(1e-2),
            "sgd": optax.sgd(0.1),
        },
        labels,
    )
    p = train(tx, params())
    for leaf in jax.tree.leaves(p):
        assert np.isfinite(leaf).all()
    assert np.abs(p["Dense_1"]["kernel"]).min() > 0
