"""rotation_metrics, layer_rotation and rotation_rate against SciPy/NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial import distance

import layca_optax
from tests.monitor.test_per_slice import moe_params


def random_tree(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "Conv_0": {
            "kernel": rng.normal(size=(3, 3, 2, 4)).astype(dtype),
            "bias": rng.normal(size=(4,)).astype(dtype),
        },
        "Dense_0": {"kernel": rng.normal(size=(6, 3)).astype(dtype)},
        "blocks": [rng.normal(size=(4, 4)).astype(dtype) for _ in range(2)],
    }


def perturb(tree, scale, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + scale * rng.normal(size=x.shape), tree)


@pytest.mark.parametrize("scale", [1e-3, 0.3, 3.0])
def test_cosine_distance_matches_scipy_in_float64(scale):
    init = random_tree(0)
    params = perturb(init, scale, 1)
    with jax.enable_x64(True):
        got = jax.jit(layca_optax.rotation_metrics)(params, init)
    want = {
        "rotation/Conv_0/kernel": ("Conv_0", "kernel"),
        "rotation/Dense_0/kernel": ("Dense_0", "kernel"),
        "rotation/blocks/0": ("blocks", 0),
        "rotation/blocks/1": ("blocks", 1),
    }
    assert list(got) == sorted(want)
    for key, (a, b) in want.items():
        ref = distance.cosine(params[a][b].ravel(), init[a][b].ravel())
        np.testing.assert_allclose(got[key], ref, rtol=1e-6, atol=1e-15)


def test_small_angles_are_accurate_in_float32():
    """The one-pass formula avoids 1 - cos cancellation."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(64, 64))
    tangent = rng.normal(size=w0.shape)
    tangent -= np.vdot(tangent, w0) / np.vdot(w0, w0) * w0
    theta = 1e-3
    w = w0 * np.cos(theta) + np.sin(theta) * tangent * (
        np.linalg.norm(w0) / np.linalg.norm(tangent)
    )
    got = layca_optax.layer_rotation(
        jnp.asarray(w, jnp.float32), jnp.asarray(w0, jnp.float32)
    )
    np.testing.assert_allclose(got, 1 - np.cos(theta), rtol=1e-2)


def test_layer_rotation_tree_and_mask():
    init = random_tree(0, np.float32)
    params = perturb(init, 0.5, 1)
    tree = layca_optax.layer_rotation(params, init)
    assert tree["Conv_0"]["bias"] is None
    assert tree["Dense_0"]["kernel"].dtype == jnp.float32
    assert tree["Dense_0"]["kernel"].shape == ()
    only_dense = {"Conv_0": False, "Dense_0": True, "blocks": False}
    got = layca_optax.rotation_metrics(
        params, init, mask=only_dense, prefix="rot_"
    )
    assert list(got) == ["rot_Dense_0/kernel"]
    # A callable mask may select vectors too.
    everything = lambda p: jax.tree.map(lambda _: True, p)
    got = layca_optax.rotation_metrics(params, init, mask=everything)
    assert "rotation/Conv_0/bias" in got


def test_per_slice_rotation_with_axis():
    init = np.random.default_rng(0).normal(size=(3, 5, 4))
    params = perturb(init, 0.5, 1)
    with jax.enable_x64(True):
        got = layca_optax.layer_rotation(params, init, axis=(1, 2))
    want = [
        distance.cosine(params[i].ravel(), init[i].ravel()) for i in range(3)
    ]
    assert got.shape == (3,)  # the kept axis, not keepdims (3, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_degenerate_values():
    z, w = np.zeros((2, 2)), np.ones((2, 2))
    got = layca_optax.layer_rotation(
        {"a": z, "b": w, "c": z, "d": w}, {"a": z, "b": z, "c": w, "d": -w}
    )
    np.testing.assert_array_equal(
        [got["a"], got["b"], got["c"], got["d"]], [0.0, 1.0, 1.0, 2.0]
    )
    rate = layca_optax.rotation_rate({"a": w, "b": z}, {"a": z, "b": w})
    np.testing.assert_array_equal([rate["a"], rate["b"]], [0.0, 0.0])


@pytest.mark.parametrize("theta", [1e-4, 0.037, 0.7, 2.0])
def test_rotation_rate_is_tan_of_the_turn(theta):
    rng = np.random.default_rng(0)
    old = rng.normal(size=(8, 8))
    t = rng.normal(size=old.shape)
    t -= np.vdot(t, old) / np.vdot(old, old) * old
    t *= np.linalg.norm(old) / np.linalg.norm(t)
    turned = np.cos(theta) * old + np.sin(theta) * t
    with jax.enable_x64(True):
        got = jax.jit(layca_optax.rotation_rate)(1.3 * turned, old)
    np.testing.assert_allclose(got, np.tan(theta), rtol=1e-9)
    # float32, with a 1% norm change: the documented relative error bound
    # 1e-7 * (1 + (radial / tangential)^2), against the f32 inputs' own tan.
    new32, old32 = np.float32(1.01 * turned), np.float32(old)
    got32 = layca_optax.rotation_rate(new32, old32)
    want = angle_tan(new32, old32)
    ratio = 0.01 / abs(np.sin(theta))
    np.testing.assert_allclose(got32, want, rtol=1e-6 + 1e-7 * ratio**2 * 4)


def angle_tan(new, old):
    """tan of the angle, via an explicit projection in float64."""
    new, old = np.float64(new).ravel(), np.float64(old).ravel()
    along = np.vdot(new, old) / np.linalg.norm(old)
    across = np.linalg.norm(new - np.vdot(new, old) / np.vdot(old, old) * old)
    return across / along


def test_rotation_rate_of_a_layca_step_is_the_learning_rate():
    params = random_tree(0, np.float32)
    grads = random_tree(1, np.float32)
    tx = layca_optax.layca(3**-3, optax.scale_by_adam(), other=optax.sgd(0.1))
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    rates = layca_optax.rotation_rate(new, params)
    for r in jax.tree.leaves(rates):
        np.testing.assert_allclose(r, 3**-3, rtol=1e-5)
    assert rates["Conv_0"]["bias"] is None


def test_low_precision_params_are_measured_in_float32():
    init = random_tree(0, np.float32)
    params = perturb(init, 0.5, 1)
    low = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    low0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), init)
    got = layca_optax.rotation_metrics(low, low0)
    for v in got.values():
        assert v.dtype == jnp.float32 and np.isfinite(v)


def test_nnx_variable_states_give_the_names_of_their_pure_form():
    from flax import nnx

    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Param)
    assert list(layca_optax.rotation_metrics(state, state)) == [
        "rotation/kernel"
    ]
    as_pure = getattr(nnx, "as_pure", None) or nnx.pure  # flax 0.12.0
    pure = as_pure(state)
    assert list(layca_optax.rotation_metrics(pure, pure)) == ["rotation/kernel"]


class TestMisuse:
    """Bad input: a ValueError naming the function, the argument and the
    value (`track_rotation`'s: tests/monitor/test_tracking_misuse.py)."""

    @pytest.mark.parametrize(
        "call",
        [
            layca_optax.layer_rotation,
            layca_optax.rotation_metrics,
            layca_optax.rotation_rate,
        ],
        ids=["layer_rotation", "rotation_metrics", "rotation_rate"],
    )
    def test_complex_layers_are_refused_by_the_metrics(self, call):
        c = jnp.ones((3, 4), jnp.complex64)
        with pytest.raises(ValueError, match=r"'k' has dtype complex64.*real"):
            call({"k": c}, {"k": c})

    def test_an_axis_named_twice(self):
        w = jnp.ones((3, 4))
        with pytest.raises(ValueError, match=r"twice"):
            layca_optax.rotation_metrics({"k": w}, {"k": w}, axis=(1, -1))

    @pytest.mark.parametrize(
        "call, where",
        [
            (layca_optax.rotation_metrics, "init_params"),
            (layca_optax.layer_rotation, "init_params"),
            (layca_optax.rotation_rate, "old_params"),
        ],
        ids=["rotation_metrics", "layer_rotation", "rotation_rate"],
    )
    def test_params_of_another_shape_name_the_leaf(self, call, where):
        params = moe_params(0)
        flipped = {**params, "head": {"kernel": params["head"]["kernel"].T}}
        with pytest.raises(
            ValueError,
            match=rf"`{call.__name__}\({where}=...\)`: the leaf 'head/kernel' "
            rf"has shape \(2, 4\) in `{where}` but \(4, 2\)",
        ):
            call(params, flipped)

    def test_a_prefix_that_is_not_a_str(self):
        params = moe_params(0)
        with pytest.raises(
            ValueError, match=r"\(prefix=...\)` must be a str.*got 3"
        ):
            layca_optax.rotation_metrics(params, params, prefix=3)

    def test_structure_mismatch_is_a_clear_error(self):
        with pytest.raises(ValueError, match="rotation_rate"):
            layca_optax.rotation_rate(
                {"a": np.ones((2, 2))}, {"b": np.ones((2, 2))}
            )
