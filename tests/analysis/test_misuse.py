"""Misused analysis functions raise errors that name the call, the argument
and the value, instead of returning wrong results or failing deep in JAX."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}


def metric(params):
    return jnp.sum(params["Dense_0"]["kernel"])


def adam_state():
    tx = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    return tx.update(grads, tx.init(PARAMS))[1]


@pytest.mark.parametrize(
    "percentiles",
    ["50", "10", b"50", [10, "50"], 50],
    ids=["str", "str10", "bytes", "list_with_str", "int"],
)
def test_adam_nu_percentiles_refuses_strings_and_scalars(percentiles):
    with pytest.raises(
        ValueError,
        match=r"`adam_nu_percentiles\(percentiles=\.\.\.\)` must be a "
        r"non-empty list of numbers in \[0, 100\], got "
        + repr(percentiles).replace("[", r"\[").replace("]", r"\]"),
    ):
        layca_optax.analysis.adam_nu_percentiles(
            adam_state(), percentiles=percentiles
        )


def test_adam_nu_percentiles_suggests_a_list():
    with pytest.raises(ValueError, match=r"got '50' .*write \[50\]"):
        layca_optax.analysis.adam_nu_percentiles(adam_state(), percentiles="50")


def test_adam_nu_percentiles_takes_any_iterable():
    state = adam_state()
    want = layca_optax.analysis.adam_nu_percentiles(state, percentiles=[10, 90])
    got = layca_optax.analysis.adam_nu_percentiles(
        state, percentiles=(q for q in [10, 90])
    )
    assert list(got) == list(want)
    got = layca_optax.analysis.adam_nu_percentiles(
        state, percentiles=np.array([10, 90])
    )
    assert list(got) == list(want)


def test_rotation_recording_refuses_one_string():
    with pytest.raises(
        ValueError,
        match=r"`RotationRecording\(paths=\.\.\.\)` must be a sequence of path "
        r"strings, one per column, got the single string 'ab'; for one layer "
        r"write \('ab',\)",
    ):
        layca_optax.analysis.RotationRecording("ab", [[0.1, 0.2]])
    rec = layca_optax.analysis.RotationRecording(("ab",), [[0.1]])
    assert rec.paths == ("ab",)


@pytest.mark.parametrize(
    "paths,rates,match",
    [
        (3, [[0.1]], r"\(paths=\.\.\.\)` must be distinct strings .*got 3"),
        (("w",), "fast", r"\(rates=\.\.\.\)` must be numbers .*got str"),
    ],
)
def test_rotation_recording_bad_types(paths, rates, match):
    with pytest.raises(ValueError, match=r"`RotationRecording" + match):
        layca_optax.analysis.RotationRecording(paths, rates)


@pytest.mark.parametrize("num_draws", [0, -1, 1.0, True, "2"])
def test_reinit_robustness_num_draws(num_draws):
    with pytest.raises(
        ValueError,
        match=r"`reinit_robustness\(num_draws=\.\.\.\)` must be an int >= 1 "
        rf"\(re-randomized draws per layer\), got {num_draws!r}\.",
    ):
        layca_optax.analysis.reinit_robustness(
            metric, PARAMS, [PARAMS], key=jax.random.key(0), num_draws=num_draws
        )


def test_rerandom_draws_num_draws():
    with pytest.raises(
        ValueError, match=r"`rerandom_draws\(num_draws=\.\.\.\)"
    ):
        layca_optax.analysis.rerandom_draws(
            PARAMS, key=jax.random.key(0), num_draws=0
        )


@pytest.mark.parametrize(
    "key,got",
    [
        (0, "0"),
        ("seed", "'seed'"),
        (jnp.zeros(3), r"an array of shape \(3,\) and dtype float32"),
        (jax.random.split(jax.random.key(0)), r"an array of \(2,\) keys"),
    ],
)
def test_reinit_robustness_key(key, got):
    with pytest.raises(
        ValueError,
        match=r"`reinit_robustness\(key=\.\.\.\)` must be one JAX PRNG key, "
        r"jax\.random\.key\(seed\) \(or a legacy "
        rf"jax\.random\.PRNGKey\(seed\)\), got {got}\.",
    ):
        layca_optax.analysis.reinit_robustness(
            metric, PARAMS, [PARAMS], key=key
        )
    with pytest.raises(ValueError, match=r"`rerandom_draws\(key=\.\.\.\)`"):
        layca_optax.analysis.rerandom_draws(PARAMS, key=key)


def test_reinit_robustness_takes_legacy_keys():
    new = layca_optax.analysis.reinit_robustness(
        metric, PARAMS, [PARAMS], key=jax.random.key(3), num_draws=2
    )
    old = layca_optax.analysis.reinit_robustness(
        metric, PARAMS, [PARAMS], key=jax.random.PRNGKey(3), num_draws=2
    )
    np.testing.assert_array_equal(new.rerandom, old.rerandom)


def test_equilibrium_outside_its_domain():
    with pytest.raises(
        ValueError,
        match=r"`equilibrium_layca_learning_rate\(learning_rate=10, "
        r"weight_decay=10\)`: no rotational equilibrium for 'sgdm' with "
        r"learning_rate \* weight_decay = 100; it needs learning_rate \* "
        r"weight_decay < min\(1, pi\*\*2 / \(8 f\)\) = 1, with f = 1 ",
    ):
        layca_optax.analysis.equilibrium_layca_learning_rate(
            "sgdm", learning_rate=10, weight_decay=10
        )
    with pytest.raises(ValueError, match=r"`equilibrium_rotation\(learning_"):
        layca_optax.analysis.equilibrium_rotation(
            "adamw", learning_rate=2.0, weight_decay=0.5
        )
    # Lion without momentum: f = pi/2, so the angle bound pi/4 binds first.
    with pytest.raises(ValueError, match=r"= 0\.785398, with f = 1\.5708"):
        layca_optax.analysis.equilibrium_layca_learning_rate(
            "lion", learning_rate=0.9, weight_decay=1.0, b1=0.0
        )
    # The inverse: a rotation whose weight decay would leave the domain.
    with pytest.raises(
        ValueError, match=r"`equilibrium_weight_decay\(rotation=1\.5\)`"
    ):
        layca_optax.analysis.equilibrium_weight_decay(
            "sgdm", learning_rate=0.1, rotation=1.5, momentum=0.9
        )


def test_equilibrium_near_its_bound():
    rho = layca_optax.analysis.equilibrium_layca_learning_rate(
        "sgdm", learning_rate=0.99, weight_decay=1.0
    )
    assert rho == pytest.approx(math.tan(math.sqrt(2 * 0.99)))
    assert rho > 0


@pytest.mark.parametrize("mesh", [3, "data", None, jax.devices()])
def test_param_shardings_mesh(mesh):
    with pytest.raises(
        TypeError,
        match=r"`param_shardings\(mesh=\.\.\.\)` must be a jax\.sharding\.Mesh",
    ):
        layca_optax.sharding.param_shardings(PARAMS, mesh, fsdp="data")
    with pytest.raises(TypeError, match=r"`param_shardings\(mesh=\.\.\.\)`"):
        layca_optax.sharding.param_shardings(PARAMS, mesh=mesh)
