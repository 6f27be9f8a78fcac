"""Bad input: a ValueError naming the function, the argument and the value."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


PARAMS = {
    "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    "Dense_1": {"kernel": jnp.ones((4, 2))},
}


def expect(pattern, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern):
        fn(*args, **kwargs)


@pytest.mark.parametrize("lr", [-0.1, math.nan, math.inf, -math.inf])
def test_bad_learning_rate(lr):
    expect(rf"layca\(learning_rate=\.\.\.\).*{lr}", layca_optax.layca, lr)


@pytest.mark.parametrize("alpha", [-1.0, 1.0, 1.5, math.nan])
def test_alpha_outside_the_open_interval(alpha):
    expect(
        rf"layca\(alpha=\.\.\.\).*{alpha}",
        layca_optax.layca,
        0.1,
        alpha=alpha,
        layer_order="leaves",
    )
    expect(
        rf"depth_multipliers\(alpha=\.\.\.\).*{alpha}",
        layca_optax.depth_multipliers,
        alpha,
        3,
    )


def test_depth_multipliers_bad_num_layers():
    expect(
        r"depth_multipliers\(num_layers=\.\.\.\).*0",
        layca_optax.depth_multipliers,
        0.1,
        0,
    )
    expect(
        r"depth_multipliers\(num_layers=\.\.\.\).*2.5",
        layca_optax.depth_multipliers,
        0.1,
        2.5,
    )


def test_nonzero_alpha_needs_layer_order():
    expect(
        r"layca\(alpha=0.3\).*layer_order", layca_optax.layca, 0.1, alpha=0.3
    )


def test_layer_order_naming_a_missing_leaf():
    tx = layca_optax.layca(
        0.1,
        alpha=0.3,
        layer_order=["Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"],
    )
    expect(
        r"layca\(layer_order=\.\.\.\).*Dense_2/kernel",
        tx.update,
        PARAMS,
        tx.init(PARAMS),
        PARAMS,
    )


def test_layer_order_omitting_a_layer():
    tx = layca_optax.layca(0.1, alpha=0.3, layer_order=["Dense_0/kernel"])
    expect(
        r"layca\(layer_order=\.\.\.\).*left out: \['Dense_1/kernel'\]",
        tx.update,
        PARAMS,
        tx.init(PARAMS),
        PARAMS,
    )


def test_layer_order_bias_is_not_a_layer():
    tx = layca_optax.layca(
        0.1,
        alpha=0.3,
        layer_order=["Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel"],
    )
    expect(
        r"layca\(layer_order=\.\.\.\).*Dense_0/bias",
        tx.update,
        PARAMS,
        tx.init(PARAMS),
        PARAMS,
    )


def test_layer_order_duplicates_and_bad_string():
    expect(
        r"layca\(layer_order=\.\.\.\).*more than once",
        layca_optax.layca,
        0.1,
        alpha=0.3,
        layer_order=["a", "a"],
    )
    expect(
        r"layca\(layer_order=\.\.\.\).*'forward'",
        layca_optax.layca,
        0.1,
        alpha=0.3,
        layer_order="forward",
    )


def test_multipliers_that_do_not_match_the_params():
    bad = {"Dense_0": 1.0, "Dense_7": 2.0}
    tx = layca_optax.layca(0.1, multipliers=bad)
    expect(r"multipliers=\.\.\..*Dense_7", tx.init, PARAMS)
    prim = layca_optax.scale_by_layer_multipliers(bad)
    expect(
        r"scale_by_layer_multipliers\(multipliers=\.\.\.\).*Dense_7",
        prim.init,
        PARAMS,
    )


@pytest.mark.parametrize("value", [-0.5, math.nan])
def test_negative_or_nonfinite_multipliers(value):
    expect(
        rf"scale_by_layer_multipliers\(multipliers=\.\.\.\).*{value}",
        layca_optax.scale_by_layer_multipliers,
        {"a": 1.0, "b": value},
    )
    expect(
        rf"multipliers=\.\.\..*{value}",
        layca_optax.layca,
        0.1,
        multipliers=value,
    )


def test_mask_of_the_wrong_structure():
    tx = layca_optax.layca(0.1, mask={"Dense_0": True, "Other": False})
    expect(r"layca\(mask=\.\.\.\).*Other", tx.init, PARAMS)


def test_mask_with_non_bool_leaves():
    expect(
        r"layca\(mask=\.\.\.\).*bools",
        layca_optax.layca,
        0.1,
        mask={"Dense_0": jnp.array(True), "Dense_1": True},
    )


def test_params_none():
    tx = layca_optax.layca(0.1)
    expect(
        r"`layca`.*params|params.*None",
        tx.update,
        PARAMS,
        tx.init(PARAMS),
        None,
    )


@pytest.mark.parametrize("eps", [-1e-7, math.nan])
def test_bad_eps(eps):
    expect(rf"layca\(eps=\.\.\.\).*{eps}", layca_optax.layca, 0.1, eps=eps)
    expect(
        rf"normalize_to_param_norm\(eps=\.\.\.\).*{eps}",
        layca_optax.normalize_to_param_norm,
        eps=eps,
    )


@pytest.mark.parametrize(
    "factory",
    [
        layca_optax.project_to_tangent,
        layca_optax.normalize_to_param_norm,
        layca_optax.reproject_to_sphere,
    ],
)
def test_bad_axis(factory):
    name = factory.__name__
    expect(rf"{name}\(axis=\.\.\.\).*'x'", factory, axis="x")
    expect(rf"{name}\(axis=\.\.\.\).*1.5", factory, axis=(0, 1.5))
    tx = factory(axis=3)
    expect(
        rf"{name}\(axis=\.\.\.\).*axis 3.*\(3, 4\)",
        tx.update,
        jnp.ones((3, 4)),
        tx.init(jnp.ones((3, 4))),
        jnp.ones((3, 4)),
    )


def test_base_and_other_must_be_transformations():
    expect(r"layca\(base=\.\.\.\).*adam", layca_optax.layca, 0.1, base="adam")
    expect(r"layca\(other=\.\.\.\).*0.1", layca_optax.layca, 0.1, other=0.1)


def test_valid_edge_values_are_accepted():
    layca_optax.layca(0.0)
    layca_optax.layca(np.float32(0.1), alpha=-0.99, layer_order="leaves")
    layca_optax.layca(optax.constant_schedule(0.1), eps=0.0)
    tx = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=0.1, alpha=0.2, layer_order="leaves"
    )
    state = tx.init(PARAMS)
    jax.jit(tx.update)(PARAMS, state, PARAMS)


def test_injected_alpha_needs_layer_order_even_under_jit():
    tx = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=0.1, alpha=0.5
    )
    expect(r"layca\(alpha=.*layer_order", jax.jit(tx.init), PARAMS)
    # The default (alpha=None) is static under inject_hyperparams.
    tx = optax.inject_hyperparams(layca_optax.layca)(learning_rate=0.1)
    jax.jit(tx.init)(PARAMS)
