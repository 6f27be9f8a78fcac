"""Arguments that were accepted silently or failed deep inside a library
(issue 24, part 5): each now a ``ValueError`` naming the function called,
the argument and what was expected."""

import jax
import jax.numpy as jnp
import numpy as np
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


def _reinit_fields(**changes):
    fields = {
        "paths": ("a", "b"),
        "checkpoint_labels": ("init", "final"),
        "baseline": 0.9,
        "reinit": np.array([[0.5, 0.9], [0.9, 0.9]]),
        "rerandom": np.zeros((2, 1)),
    }
    return fields | changes


@pytest.mark.parametrize(
    "change, match",
    [
        ({"paths": "ab"}, r"ReinitResult\(paths=\.\.\.\)` must be a sequence"),
        ({"paths": ("a", 1)}, r"paths=.*sequence of str"),
        ({"paths": ("a", "a")}, r"paths=.*distinct"),
        ({"checkpoint_labels": ()}, r"checkpoint_labels=.*at least one"),
        ({"baseline": "0.9"}, r"baseline=.*a real number"),
        ({"baseline": True}, r"baseline=.*a real number"),
        ({"reinit": np.zeros((2, 3))}, r"reinit=.*shape \(2, 3\).*\[2, 2\]"),
        ({"reinit": np.zeros(4)}, r"reinit=.*2-D array"),
        ({"reinit": np.full((2, 2), "x")}, r"reinit=.*real numbers"),
        ({"rerandom": np.zeros((3, 1))}, r"rerandom=.*\[2, draws\]"),
        ({"tolerance": -0.1}, r"tolerance=.*non-negative"),
        ({"tolerance": float("nan")}, r"tolerance=.*finite"),
        ({"higher_is_better": 1}, r"higher_is_better=.*a bool"),
    ],
)
def test_reinit_result_checks_its_fields(change, match):
    with pytest.raises(ValueError, match=match):
        layca_optax.analysis.ReinitResult(**_reinit_fields(**change))


def test_reinit_result_normalizes_its_fields():
    r = layca_optax.analysis.ReinitResult(
        **_reinit_fields(paths=["a", "b"], reinit=[[1, 0], [0, 1]])
    )
    assert r.paths == ("a", "b") and r.reinit.dtype == np.float64


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
