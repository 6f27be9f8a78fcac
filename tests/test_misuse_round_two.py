"""Arguments that were accepted silently or failed deep inside a library
(issue 24, part 5): each now a ``ValueError`` naming the function called,
the argument and what was expected."""

import jax.numpy as jnp
import optax
import pytest

import layca_optax


W = jnp.ones((3, 4))


@pytest.mark.parametrize(
    "name",
    [
        "normalize_to_param_norm",
        "project_to_tangent",
        "reproject_to_sphere",
        "scale_by_layca",
    ],
)
def test_an_update_of_another_shape_is_refused(name):
    tx = (
        getattr(layca_optax, name)(0.1)
        if name == "scale_by_layca"
        else (getattr(layca_optax, name)())
    )
    with pytest.raises(
        ValueError, match=rf"`{name}`.*shape \(1, 1\).*\(3, 4\)"
    ):
        tx.update(jnp.ones((1, 1)), tx.init(W), W)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: layca_optax.layer_rotation({"k": c}, {"k": c}),
        lambda c: layca_optax.rotation_metrics({"k": c}, {"k": c}),
        lambda c: layca_optax.rotation_rate({"k": c}, {"k": c}),
        lambda c: layca_optax.track_rotation().init({"k": c}),
    ],
)
def test_complex_layers_are_refused_by_the_metrics(call):
    with pytest.raises(ValueError, match=r"'k' has dtype complex64.*real"):
        call(jnp.ones((3, 4), jnp.complex64))


def test_an_axis_named_twice():
    tx = layca_optax.layca(0.1, axis=(0, 0))
    with pytest.raises(ValueError, match=r"layca\(axis=\.\.\.\).*twice.*'k'"):
        tx.init({"k": W})
    with pytest.raises(ValueError, match=r"twice"):
        layca_optax.rotation_metrics({"k": W}, {"k": W}, axis=(1, -1))


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
