"""``scale_by_tangent_adam`` (issue 26 part 2): against NumPy in float64
under ``jit``, with ``axis``; its invariants; as Layca's and Hyperball's
``base``; its cost in bytes against ``optax.scale_by_adam``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


pytestmark = pytest.mark.filterwarnings("ignore:.*would drift:UserWarning")

SHAPES = {"a": (4, 3), "b": (2, 3, 5)}


def _project(x, w, axes):
    """NumPy: ``x - <x, w> / ||w||^2 w`` per layer (0-norm layers: ``x``)."""
    xw = np.sum(x * w, axis=axes, keepdims=True)
    ww = np.sum(w * w, axis=axes, keepdims=True)
    k = np.divide(xw, ww, out=np.zeros_like(xw), where=ww != 0)
    return x - k * w


def _tree(seed, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _np_tangent_adam(g, w, m, v, t, b1, b2, eps, axes):
    """One step in float64: ``(m, v, update)``."""
    gp = _project(g, w, axes)
    m = _project(b1 * m + (1 - b1) * g, w, axes)
    v = b2 * v + (1 - b2) * gp**2
    u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return m, v, u


@pytest.mark.parametrize("axis", [None, (-1,)], ids=["whole", "last"])
@pytest.mark.parametrize("b1, b2, eps", [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3)])
def test_against_numpy_under_jit(axis, b1, b2, eps):
    tx = layca_optax.scale_by_tangent_adam(b1, b2, eps, axis=axis)
    params = _tree(0)
    state = tx.init(_f32(params))
    update = jax.jit(tx.update)
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    for t in range(1, 6):
        # The weights move between steps, so the transport matters.
        w = jax.tree.map(lambda p, t=t: p + 0.3 * t * np.cos(p), params)
        g = _tree(10 + t)
        u, state = update(_f32(g), state, _f32(w))
        assert int(state.count) == t
        for k in SHAPES:
            axes = tuple(range(w[k].ndim)) if axis is None else axis
            m[k], v[k], want = _np_tangent_adam(
                g[k], w[k], m[k], v[k], t, b1, b2, eps, axes
            )
            np.testing.assert_allclose(u[k], want, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(state.mu[k], m[k], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(state.nu[k], v[k], rtol=1e-4, atol=1e-7)
            # The first moment is tangent to the weights it was updated with.
            along = np.sum(np.asarray(state.mu[k]) * w[k], axis=axes)
            norms = np.sqrt(
                np.sum(w[k] ** 2, axis=axes)
                * np.sum(np.asarray(state.mu[k]) ** 2, axis=axes)
            )
            assert np.all(np.abs(along) <= 1e-5 * norms)


def test_a_zero_layer_gets_adams_update():
    # Every direction is tangent to a zero layer: optax.scale_by_adam.
    ours = layca_optax.scale_by_tangent_adam(0.8, 0.95, 1e-6)
    adam = optax.scale_by_adam(0.8, 0.95, 1e-6)
    w = {"k": jnp.zeros((5, 4))}
    s1, s2 = ours.init(w), adam.init(w)
    for i in range(4):
        g = _f32({"k": _tree(20 + i, {"k": (5, 4)})["k"]})
        u1, s1 = jax.jit(ours.update)(g, s1, w)
        u2, s2 = adam.update(g, s2, w)
        np.testing.assert_allclose(u1["k"], u2["k"], rtol=2e-6, atol=1e-7)


def test_tangent_gradients_and_fixed_weights_give_adams_moments():
    # With gradients tangent to fixed weights nothing is projected away:
    # the moments and the update are Adam's.
    w = _f32({"k": np.eye(4)[:, :3]})
    ours, adam = layca_optax.scale_by_tangent_adam(), optax.scale_by_adam()
    s1, s2 = ours.init(w), adam.init(w)
    for i in range(3):
        g = _tree(30 + i, {"k": (4, 3)})["k"]
        g = {"k": _project(g, np.asarray(w["k"], np.float64), (0, 1))}
        u1, s1 = ours.update(_f32(g), s1, w)
        u2, s2 = adam.update(_f32(g), s2, w)
        np.testing.assert_allclose(u1["k"], u2["k"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_as_laycas_base_turns_by_arctan_lr(fused):
    params = {"k": jax.random.normal(jax.random.key(0), (8, 6))}
    tx = layca_optax.layca(
        0.1, base=layca_optax.scale_by_tangent_adam(), fused=fused
    )
    state = tx.init(params)
    step = jax.jit(tx.update)
    for i in range(3):
        g = {"k": jax.random.normal(jax.random.key(i + 1), (8, 6))}
        u, state = step(g, state, params)
        new = optax.apply_updates(params, u)
        a, b = (np.asarray(x["k"], np.float64).ravel() for x in (params, new))
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        np.testing.assert_allclose(np.arccos(cos), np.arctan(0.1), rtol=1e-4)
        np.testing.assert_allclose(
            np.linalg.norm(b), np.linalg.norm(a), rtol=1e-6
        )
        params = new


def test_as_hyperballs_base_with_axis_keeps_each_slice_on_its_radius():
    params = {"k": jax.random.normal(jax.random.key(5), (3, 8, 6))}
    base = layca_optax.scale_by_tangent_adam(axis=(1, 2))
    tx = layca_optax.hyperball(0.05, base, axis=(1, 2), radius=2.0)
    state = tx.init(params)
    for i in range(3):
        g = {"k": jax.random.normal(jax.random.key(10 + i), (3, 8, 6))}
        u, state = jax.jit(tx.update)(g, state, params)
        params = optax.apply_updates(params, u)
        np.testing.assert_allclose(
            jnp.linalg.norm(params["k"], axis=(1, 2)), 2.0, rtol=1e-6
        )


def test_bfloat16_params():
    w = {"k": jnp.asarray(_tree(40, {"k": (6, 5)})["k"], jnp.bfloat16)}
    tx = layca_optax.scale_by_tangent_adam()
    state = tx.init(w)
    g = {"k": jnp.asarray(_tree(41, {"k": (6, 5)})["k"], jnp.bfloat16)}
    u, state = jax.jit(tx.update)(g, state, w)
    assert u["k"].dtype == state.mu["k"].dtype == jnp.bfloat16
    want = _np_tangent_adam(
        *(np.asarray(x["k"], np.float64) for x in (g, w)),
        0.0,
        0.0,
        1,
        0.9,
        0.999,
        1e-8,
        (0, 1),
    )[2]
    np.testing.assert_allclose(np.asarray(u["k"], np.float64), want, rtol=1e-2)


def test_cost_in_bytes_against_scale_by_adam():
    # XLA:CPU's cost analysis of one step on two layers, in units of the
    # params' bytes: scale_by_adam 9, scale_by_tangent_adam 16 (three
    # sums over g, m and w, and the weights read again); a copy more of
    # any array would add at least 1.
    w = {"a": jnp.ones((256, 256)), "b": jnp.ones((128, 128))}
    size = sum(x.nbytes for x in jax.tree.leaves(w))

    def traffic(tx):
        lowered = jax.jit(tx.update).lower(w, tx.init(w), w)
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["bytes accessed"] / size

    adam = traffic(optax.scale_by_adam())
    ours = traffic(layca_optax.scale_by_tangent_adam())
    assert ours <= adam + 7.5, (ours, adam)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"b1": 1.0}, r"scale_by_tangent_adam\(b1="),
        ({"b1": -0.1}, r"scale_by_tangent_adam\(b1="),
        ({"b2": 1.5}, r"scale_by_tangent_adam\(b2="),
        ({"b2": float("nan")}, r"scale_by_tangent_adam\(b2="),
        ({"eps": -1e-8}, r"scale_by_tangent_adam\(eps="),
        ({"eps": "small"}, r"scale_by_tangent_adam\(eps="),
        ({"axis": 1.5}, r"scale_by_tangent_adam\(axis="),
    ],
)
def test_bad_arguments_name_the_function(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layca_optax.scale_by_tangent_adam(**kwargs)


def test_update_without_params_is_refused():
    tx = layca_optax.scale_by_tangent_adam()
    w = jnp.ones((2, 2))
    with pytest.raises(ValueError, match="scale_by_tangent_adam.*params"):
        tx.update(w, tx.init(w), None)


def test_inject_hyperparams():
    w = _f32(_tree(50))
    tx = optax.inject_hyperparams(layca_optax.scale_by_tangent_adam)(b1=0.5)
    state = tx.init(w)
    u, state = jax.jit(tx.update)(_f32(_tree(51)), state, w)
    ref = layca_optax.scale_by_tangent_adam(b1=0.5)
    v, _ = ref.update(_f32(_tree(51)), ref.init(w), w)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
