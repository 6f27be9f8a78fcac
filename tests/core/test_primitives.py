"""The four primitives, each against NumPy formulas, under jax.jit; their
misuse (``TestMisuse``)."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


def tree(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shapes = {"conv": (3, 3, 2, 4), "dense": (5, 3), "stack": (2, 4, 3)}
    return {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}


def apply(tx, updates, params):
    @jax.jit
    def fn(u, p):
        return tx.update(u, tx.init(p), p)[0]

    return jax.tree.map(np.asarray, fn(updates, params))


def np_project(u, w):
    return u - np.vdot(u, w) / np.vdot(w, w) * w


def np_normalize(u, w, eps=1e-7):
    n = np.linalg.norm(u)
    return np.zeros_like(u) if n <= eps else u * np.linalg.norm(w) / n


def np_reproject(u, w):
    v = w + u
    return np.linalg.norm(w) * v / np.linalg.norm(v) - w


CASES = {
    "project": (layca_optax.project_to_tangent, np_project),
    "normalize": (layca_optax.normalize_to_param_norm, np_normalize),
    "reproject": (layca_optax.reproject_to_sphere, np_reproject),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_numpy(name):
    factory, np_fn = CASES[name]
    params, updates = tree(0), tree(1)
    got = apply(factory(), updates, params)
    for k in params:
        want = np_fn(updates[k].astype(float), params[k].astype(float))
        np.testing.assert_allclose(got[k], want, rtol=2e-5, atol=2e-6)


def test_invariants_of_each_primitive():
    params, updates = tree(0), tree(1)
    t = apply(layca_optax.project_to_tangent(), updates, params)
    n = apply(layca_optax.normalize_to_param_norm(), updates, params)
    r = apply(layca_optax.reproject_to_sphere(), updates, params)
    for k, w in params.items():
        wn = np.linalg.norm(w)
        assert abs(np.vdot(t[k], w)) < 1e-5 * wn * np.linalg.norm(t[k])
        np.testing.assert_allclose(np.linalg.norm(n[k]), wn, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(w + r[k]), wn, rtol=1e-6)


@pytest.mark.parametrize("shrink", [1e-3, 0.1, 0.69, 0.72, 1.0, 3.0, 100.0])
def test_reproject_when_the_update_shortens_or_lengthens_the_layer(shrink):
    """Both of the reprojection's formulas (the cross sums where ``w + u``
    is at least 0.7 ``||w||`` long, ``<w + u, w + u>`` below): the result
    is ``||w|| (w + u) / ||w + u||``, against NumPy in float64."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8))
    p = rng.normal(size=(16, 8))
    p -= np.vdot(p, w) / np.vdot(w, w) * w
    v = shrink * w + 0.05 * shrink * np.linalg.norm(w) * p / np.linalg.norm(p)
    u = jnp.asarray(v - w, jnp.float32)
    wj = jnp.asarray(w, jnp.float32)
    got = apply(layca_optax.reproject_to_sphere(), u, wj)
    want = np_reproject(np.asarray(u, float), np.asarray(wj, float))
    # w + u itself rounds to eps ||w|| in float32: relative to a short
    # w + u, its direction is known to eps / shrink only.
    atol = 3e-6 * np.abs(w).max() / min(shrink, 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    new = np.asarray(wj + got, np.float64)
    rtol = 1e-6 / min(shrink, 1.0) ** 0.5
    np.testing.assert_allclose(
        np.linalg.norm(new), np.linalg.norm(w), rtol=rtol
    )


@pytest.mark.parametrize(
    "axis,axes",
    [(0, (0,)), (-1, (-1,)), ((1, 2), (1, 2)), (layca_optax.fan_in_axes, None)],
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_axis_reduces_over_the_given_axes(name, axis, axes):
    factory, np_fn = CASES[name]
    w = np.random.default_rng(0).normal(size=(3, 4, 5))
    u = np.random.default_rng(1).normal(size=(3, 4, 5))
    with jax.enable_x64(True):
        got = apply(factory(axis=axis), u, w)
    axes = (0, 1) if axes is None else tuple(a % 3 for a in axes)
    keep = [a for a in range(3) if a not in axes]
    wm, um, gm = (np.moveaxis(x, keep, range(len(keep))) for x in (w, u, got))
    for idx in np.ndindex(*wm.shape[: len(keep)]):
        np.testing.assert_allclose(
            gm[idx], np_fn(um[idx], wm[idx]), rtol=1e-12, atol=1e-12
        )


def test_multipliers_float_prefix_tree_and_callable():
    params = tree(0)
    ones = jax.tree.map(np.ones_like, params)
    for mults, want in (
        (0.5, {"conv": 0.5, "dense": 0.5, "stack": 0.5}),
        (
            {"conv": 2.0, "dense": 0.0, "stack": 1.5},
            {"conv": 2.0, "dense": 0.0, "stack": 1.5},
        ),
        (
            lambda p: jax.tree.map(lambda x: float(x.ndim), p),
            {"conv": 4.0, "dense": 2.0, "stack": 3.0},
        ),
    ):
        got = apply(layca_optax.scale_by_layer_multipliers(mults), ones, params)
        for k in params:
            np.testing.assert_array_equal(got[k], want[k])


def test_multipliers_on_a_nested_prefix():
    params = {
        "block": {"a": np.ones((2, 2)), "b": np.ones((2, 2))},
        "head": np.ones((2, 2)),
    }
    tx = layca_optax.scale_by_layer_multipliers({"block": 0.1, "head": 3.0})
    got = apply(tx, params, params)
    np.testing.assert_allclose(got["block"]["b"], 0.1)
    np.testing.assert_allclose(got["head"], 3.0)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_degenerate_inputs_are_finite(name):
    factory, _ = CASES[name]
    w = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    cases = {
        "zero_w": (np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)),
        "zero_u": (w, np.zeros((2, 3), np.float32)),
        "parallel": (w, -2.0 * w),
        "cancel": (w, -w),
        "empty": (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)),
    }
    for case, (p, u) in cases.items():
        got = apply(factory(), u, p)
        assert np.isfinite(got).all(), case
        assert got.shape == p.shape
        if case == "zero_u":  # a zero update stays zero
            np.testing.assert_array_equal(got, 0.0)
    # The documented results.
    zw, zu, par, cancel = (
        cases[c] for c in ("zero_w", "zero_u", "parallel", "cancel")
    )
    if name == "project":
        np.testing.assert_array_equal(apply(factory(), zw[1], zw[0]), 1.0)
        np.testing.assert_array_equal(apply(factory(), par[1], par[0]), 0.0)
    if name == "normalize":
        np.testing.assert_array_equal(apply(factory(), zw[1], zw[0]), 0.0)
        np.testing.assert_array_equal(apply(factory(), zu[1], zu[0]), 0.0)
    if name == "reproject":
        np.testing.assert_array_equal(apply(factory(), zw[1], zw[0]), 0.0)
        np.testing.assert_array_equal(
            apply(factory(), cancel[1], cancel[0]), 0.0
        )


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_gradients_are_finite_at_degenerate_points(name):
    factory, _ = CASES[name]
    tx = factory()

    def f(u, p):
        return jnp.sum(tx.update(u, tx.init(p), p)[0] ** 2)

    w = jnp.arange(6.0).reshape(2, 3)
    for u, p in (
        (jnp.ones((2, 3)), jnp.zeros((2, 3))),
        (jnp.zeros((2, 3)), w),
        (2.0 * w, w),
        (-w, w),
    ):
        gu, gp = jax.jit(jax.grad(f, argnums=(0, 1)))(u, p)
        assert np.isfinite(gu).all() and np.isfinite(gp).all()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow  # 2 s on 2 cores: out of `make test-fast`
def test_low_precision_in_low_precision_out(name, dtype):
    factory, np_fn = CASES[name]
    params, updates = tree(0), tree(1)
    p = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    u = jax.tree.map(lambda x: jnp.asarray(x, dtype), updates)
    tx = factory()
    got = jax.jit(lambda u, p: tx.update(u, tx.init(p), p)[0])(u, p)
    for k in params:
        assert got[k].dtype == dtype
        want = np_fn(np.asarray(u[k], float), np.asarray(p[k], float))
        np.testing.assert_allclose(
            np.asarray(got[k], float),
            want,
            rtol=2e-2,
            atol=2e-2 * np.abs(want).max(),
        )


def test_primitives_compose_with_optax_chain_and_masked():
    """A user-built Layca (with optax.masked) equals `layca`."""
    params = dict(tree(0), bias=np.ones(3, np.float32))
    grads = dict(tree(1), bias=np.ones(3, np.float32))
    mask = dict(jax.tree.map(lambda _: True, tree(0)), bias=False)
    lr = 0.05
    chain = optax.chain(
        optax.masked(
            optax.chain(
                optax.scale(lr),
                layca_optax.project_to_tangent(),
                layca_optax.normalize_to_param_norm(),
                optax.scale(-lr),
                layca_optax.reproject_to_sphere(),
            ),
            mask,
        ),
        optax.masked(
            optax.set_to_zero(), ft.partial(jax.tree.map, lambda m: not m)(mask)
        ),
    )
    got = apply(chain, grads, params)
    want = apply(layca_optax.layca(lr, fused=False), grads, params)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_eps_threshold_of_normalize():
    w = np.ones((2, 2), np.float32)
    tx = layca_optax.normalize_to_param_norm(eps=0.5)
    np.testing.assert_array_equal(
        apply(tx, np.full((2, 2), 0.2, np.float32), w), 0.0
    )
    np.testing.assert_allclose(
        apply(tx, np.full((2, 2), 0.3, np.float32), w), 1.0, rtol=1e-6
    )


W = jnp.ones((3, 4))


def expect(pattern, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern):
        fn(*args, **kwargs)


class TestMisuse:
    """Bad input to the primitives (and to `depth_multipliers`): a
    ValueError naming the primitive, the argument and the value."""

    def test_depth_multipliers_bad_num_layers(self):
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

    @pytest.mark.parametrize(
        "factory",
        [
            layca_optax.project_to_tangent,
            layca_optax.normalize_to_param_norm,
            layca_optax.reproject_to_sphere,
        ],
    )
    def test_bad_axis(self, factory):
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

    @pytest.mark.parametrize("name", sorted(CASES))
    def test_params_none_is_a_clear_error(self, name):
        factory, _ = CASES[name]
        tx = factory()
        u = tree(0)
        fn_name = factory.__name__
        with pytest.raises(ValueError, match=fn_name + ".*params"):
            tx.update(u, tx.init(u), None)

    def test_callable_multipliers_need_params(self):
        tx = layca_optax.scale_by_layer_multipliers(lambda p: 1.0)
        with pytest.raises(
            ValueError, match="scale_by_layer_multipliers.*params"
        ):
            tx.update(tree(0), tx.init(tree(0)), None)

    @pytest.mark.parametrize(
        "name",
        [
            "normalize_to_param_norm",
            "project_to_tangent",
            "reproject_to_sphere",
            "scale_by_layca",
        ],
    )
    def test_an_update_of_another_shape_is_refused(self, name):
        tx = (
            getattr(layca_optax, name)(0.1)
            if name == "scale_by_layca"
            else (getattr(layca_optax, name)())
        )
        with pytest.raises(
            ValueError, match=rf"`{name}`.*shape \(1, 1\).*\(3, 4\)"
        ):
            tx.update(jnp.ones((1, 1)), tx.init(W), W)

    def test_scale_by_layca_axis_error_names_scale_by_layca(self):
        w = jnp.eye(3)
        tx = layca_optax.scale_by_layca(0.1, axis=5)
        with pytest.raises(
            ValueError, match=r"^`scale_by_layca\(axis=\.\.\.\)`"
        ):
            tx.update(w, tx.init(w), w)
