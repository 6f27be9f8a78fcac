"""Misuse of `layca` (and of `hyperball` and `layca_lars`, built the same
way): a ValueError naming the function, the argument and the value, or a
warning, never a silent wrong result or an error from deep inside jax or
optax.

Its primitives' misuse: tests/core/test_primitives.py::TestMisuse; the
variants' own arguments: tests/core/test_variants.py::TestMisuse; the name
every public function gives: tests/core/test_checks.py.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from tests.core.test_configurations import scanned_params


LR = 0.1
W = jnp.ones((3, 4))
PARAMS = {
    "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    "Dense_1": {"kernel": jnp.ones((4, 2))},
}


def expect(pattern, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern):
        fn(*args, **kwargs)


# 1. Each argument, checked when `layca(...)` is called or at the first update.


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


# 2. Configurations a user tries first (Flax NNX scanned stacks, full
# optimizers as `base`, inject_hyperparams, Muon): each says why not.


@pytest.mark.parametrize(
    "base",
    [
        optax.adam(1e-3),
        optax.sgd(0.1),
        optax.sgd(0.1, momentum=0.9),
        optax.adamw(1e-3, weight_decay=1e-4),
        optax.lion(1e-4),
        optax.adam(optax.linear_schedule(0.0, 1e-3, 100)),
        optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
    ],
    ids=["adam", "sgd", "sgd-momentum", "adamw", "lion", "warmup", "inject"],
)
@pytest.mark.parametrize(
    "make", [layca_optax.layca, layca_optax.hyperball, layca_optax.layca_lars]
)
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_full_optimizer_as_base_raises(base, make):
    tx = make(LR, base=base, mask=None, other=optax.adam(1e-3))
    with pytest.raises(ValueError, match=r"base=\.\.\.\)` got a full optim"):
        tx.init(scanned_params())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"axis": layca_optax.fan_in_axes},
        {"mask": layca_optax.default_layer_mask},
        {"multipliers": lambda p: jax.tree.map(lambda _: 1.0, p)},
    ],
    ids=["axis", "mask", "multipliers"],
)
def test_inject_hyperparams_callables_need_static_args(kwargs):
    params = {"w": jnp.eye(3)}
    name = next(iter(kwargs))
    tx = optax.inject_hyperparams(layca_optax.layca)(LR, **kwargs)
    with pytest.raises(ValueError, match=rf"static_args=\('{name}',\)"):
        tx.init(params)


def test_inject_hyperparams_int_axis_names_static_args():
    tx = optax.inject_hyperparams(layca_optax.layca)(LR, axis=0)
    with pytest.raises(ValueError, match=r"layca\(axis=\.\.\.\).*static_args"):
        tx.init({"w": jnp.eye(3)})


def test_init_warns_once_listing_layers_and_frozen_leaves():
    params = scanned_params()
    tx = layca_optax.layca(LR)
    with pytest.warns(UserWarning, match="leaves are layers") as record:
        tx.init(params)
    message = str(record[0].message)
    assert "2 leaves are layers (rotated): h/mlp/kernel, head/kernel" in message
    assert "stay frozen" in message and "h/norm/scale" in message
    assert "embed/embedding" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tx.init(params)  # once per optimizer
        layca_optax.layca(
            LR, mask=layca_optax.default_layer_mask, other=optax.sgd(0.1)
        ).init(params)


def test_init_does_not_warn_when_other_is_given():
    """Issue 23: with `other`, no leaf stays frozen, so no warning (it used
    to fire unless `mask` was given too); a `mask` without `other` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layca_optax.layca(LR, other=optax.adam(1e-3)).init(scanned_params())
    mask = layca_optax.default_layer_mask
    with pytest.warns(UserWarning, match=r"by `mask`, 2 leaves .* stay frozen"):
        layca_optax.layca(LR, mask=mask).init(scanned_params())


def test_false_mask_raises():
    with pytest.raises(ValueError, match=r"mask=False\)` makes no leaf"):
        layca_optax.layca(LR, mask=False)


def test_axis_callable_returning_garbage_names_the_leaf():
    tx = layca_optax.layca(LR, axis=lambda path, x: "rows")
    with pytest.raises(ValueError, match=r"returned 'rows' for the leaf 'w'"):
        tx.update(
            {"w": jnp.eye(2)}, tx.init({"w": jnp.eye(2)}), {"w": jnp.eye(2)}
        )


def test_muon_without_dimension_numbers_says_how():
    tx = layca_optax.layca(LR, base=optax.contrib.scale_by_muon())
    with pytest.raises(ValueError, match="muon_dimension_numbers"):
        tx.init({"a": {"kernel": jnp.eye(3)}, "b": {"kernel": jnp.eye(3)}})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": "0.1"}, r"layca\(learning_rate=\.\.\.\)"),
        ({"learning_rate": True}, r"layca\(learning_rate=\.\.\.\)"),
        ({"alpha": "0.5", "layer_order": "leaves"}, r"layca\(alpha=\.\.\.\)"),
        ({"alpha": 0.5, "layer_order": {"a", "b"}}, r"a set has no order"),
        ({"alpha": 0.5, "layer_order": 42}, r"layca\(layer_order=\.\.\.\)"),
        ({"axis": "x"}, r"layca\(axis=\.\.\.\)"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    kwargs = {"learning_rate": LR, **kwargs}
    with pytest.raises(ValueError, match=match):
        layca_optax.layca(**kwargs)


def test_update_argument_errors_name_the_argument():
    params = {"a": jnp.eye(3), "b": jnp.ones((2, 3))}
    tx = layca_optax.layca(LR)
    state = tx.init(params)
    with pytest.raises(ValueError, match="state=None"):
        tx.update(params, None, params)
    with pytest.raises(ValueError, match="different structures"):
        tx.update({"a": params["a"]}, state, params)
    with pytest.raises(ValueError, match=r"different shapes at 'b': \(3, 2\)"):
        tx.update({"a": params["a"], "b": jnp.ones((3, 2))}, state, params)


@pytest.mark.parametrize(
    "make", [layca_optax.layca, layca_optax.hyperball, layca_optax.layca_lars]
)
def test_schedule_negative_at_step_zero_raises(make):
    with pytest.raises(ValueError, match="value at step 0"):
        make(optax.linear_schedule(-0.1, 0.1, 10))


def test_init_inside_jit_with_captured_params():
    params = {"w": jnp.eye(3), "z": {"kernel": jnp.zeros((2, 2))}}

    @jax.jit
    def init_full():
        tx = layca_optax.layca(LR, base=optax.adam(1e-3))
        return tx.init({"w": params["w"]})

    with pytest.raises(ValueError, match="got a full optimizer"):
        init_full()

    @jax.jit
    def init_zero():
        return layca_optax.layca(LR).init(params)

    with pytest.warns(UserWarning, match="these layers are zero: z/kernel"):
        init_zero()


@pytest.mark.parametrize("fused", [True, False])
def test_callable_multipliers_errors_name_layca(fused):
    params = {"w": jnp.eye(3)}
    tx = layca_optax.layca(LR, multipliers=lambda p: -1.0, fused=fused)
    with pytest.raises(ValueError, match=r"^`layca\(multipliers=\.\.\.\)`"):
        tx.update(params, tx.init(params), params)


# 3. Accepted silently or failed deep inside a library before (issue 24).


def test_an_axis_named_twice():
    tx = layca_optax.layca(0.1, axis=(0, 0))
    with pytest.raises(ValueError, match=r"layca\(axis=\.\.\.\).*twice.*'k'"):
        tx.init({"k": W})


@pytest.mark.parametrize("path", [b"ab", 3, None])
def test_path_str_takes_str_or_key_paths(path):
    with pytest.raises(ValueError, match=r"path_str\(path=\.\.\.\)"):
        layca_optax.path_str(path)


def test_params_that_are_not_arrays():
    with pytest.raises(ValueError, match=r"layca`'s init got.*'abc'.*str"):
        layca_optax.layca(0.1).init("abc")
    with pytest.raises(ValueError, match=r"'a'.*object"):
        layca_optax.layca(0.1).init({"a": object(), "b": W})


def test_layer_order_of_ints():
    with pytest.raises(ValueError, match=r"layer_order=.*key paths.*\[1, 2\]"):
        layca_optax.layca(0.1, alpha=0.5, layer_order=[1, 2])


def test_schedules_of_another_signature_or_shape():
    with pytest.raises(ValueError, match=r"learning_rate=.*count 0 failed"):
        layca_optax.layca(lambda: 0.1)
    with pytest.raises(ValueError, match=r"learning_rate=.*scalar.*\(3,\)"):
        layca_optax.layca(lambda count: jnp.full(3, 0.1))
    layca_optax.layca(optax.cosine_decay_schedule(0.1, 100))  # still fine


@pytest.mark.parametrize("base", [optax.scale_by_adam(), optax.trace(0.9)])
@pytest.mark.parametrize("shape", [(5, 4), (1, 4)])  # (1, 4) broadcasts
def test_a_state_restored_into_a_model_of_another_shape(base, shape):
    tx = layca_optax.layca(0.1, base=base, other=optax.adam(1e-3))
    state = tx.init({"a": W, "b": jnp.ones(4)})
    params = {"a": jnp.ones(shape), "b": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"holds \(3, 4\) for the leaf 'a'"):
        tx.update(params, state, params)


def test_a_state_of_another_structure():
    tx = layca_optax.layca(0.1, base=optax.scale_by_adam())
    state = tx.init({"a": W})
    with pytest.raises(ValueError, match=r"layca`'s update failed.*structure"):
        tx.update({"c": W}, state, {"c": W})


def test_a_mask_that_changes_between_init_and_update():
    phase = {"init": True}
    mask = lambda p: {"a": phase["init"], "b": not phase["init"]}
    tx = layca_optax.layca(
        0.1, base=optax.scale_by_adam(), mask=mask, other=optax.adam(1e-3)
    )
    params = {"a": W, "b": W}
    state = tx.init(params)
    phase["init"] = False
    with pytest.raises(ValueError, match=r"same tree at init and at each"):
        tx.update(params, state, params)
