"""`layca_lars`, `cap_norm_growth` and `hyperball` against NumPy (SPEC 5.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers, scale_by_muon

import layca_optax
from tests import reference


SHAPES = {"a": (8, 10), "b": (3, 3, 2, 4)}
# Per-step multiple of w added to the gradient: inward gradients (-0.3) make
# LARS steps lengthen the layer (the cap binds), outward ones (0.3) shorten it.
RADIAL = [-0.3, 0.0, 0.3, -0.3, 0.3, 0.0]


def init_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    params["bias"] = rng.normal(size=(4,)).astype(dtype)
    return params


def random_grads(steps, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [
        {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
        for _ in range(steps)
    ]


def run_jax(tx, params, gs, dtype, radial=RADIAL):
    @jax.jit
    def step(params, state, g, c):
        grads = {k: c * params[k] + g[k] for k in SHAPES}
        grads["bias"] = jnp.ones_like(params["bias"])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    state, history = tx.init(params), []
    for g, c in zip(gs, radial, strict=True):
        params, state = step(params, state, g, jnp.asarray(c, dtype))
        history.append(params)
    return history


def lars_reference(params, gs, lr, mu, cap):
    """SPEC 5.1, V1 `LARS.py`: Keras velocity, normalize, step, cap."""
    w = {k: np.float64(params[k]) for k in SHAPES}
    n0 = {k: np.linalg.norm(v) for k, v in w.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    history, bound = [], []
    for g, c in zip(gs, RADIAL, strict=True):
        new = {}
        for k, p in w.items():
            v = mu * m[k] - lr * (g[k] + c * p)  # 1. velocity
            m[k] = v
            nv = np.linalg.norm(v)
            step = v / nv * np.linalg.norm(p) if nv > 0 else 0 * v  # 2.
            q = p + lr * step  # 3.
            if cap is not None:  # 4. the norm-growth cap
                limit = np.linalg.norm(p) + cap * n0[k]
                capped = np.linalg.norm(q) - np.linalg.norm(p) > cap * n0[k]
                bound.append(capped)
                if capped:
                    q = q / np.linalg.norm(q) * limit
            new[k] = q
        w = new
        history.append(w)
    return history, bound


def assert_close(actual, desired, rtol):
    np.testing.assert_allclose(
        actual, desired, rtol=rtol, atol=rtol * np.abs(desired).max()
    )


@pytest.mark.parametrize(
    "dtype,mu,cap",
    [
        ("float32", 0.0, 1e-4),
        ("float64", 0.0, 1e-4),
        ("float32", 0.5, 1e-4),
        ("float64", 0.9, 1e-2),
        ("float32", 0.9, None),
    ],
)
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_lars_matches_reference(dtype, mu, cap):
    lr, rtol = 0.05, 1e-5 if dtype == "float32" else 1e-12
    with jax.enable_x64(dtype == "float64"):
        params, gs = init_params(dtype), random_grads(len(RADIAL), dtype)
        base = optax.trace(mu) if mu else None
        tx = layca_optax.layca_lars(lr, base, max_growth=cap)
        got = run_jax(tx, params, gs, dtype)
    want, bound = lars_reference(params, gs, lr, mu, cap)
    if cap is not None:  # both branches of the cap are exercised
        assert any(bound) and not all(bound), bound
    for t in range(len(RADIAL)):
        for k in SHAPES:
            assert got[t][k].dtype == jnp.dtype(dtype)
            assert_close(np.float64(got[t][k]), want[t][k], rtol)
        np.testing.assert_array_equal(got[t]["bias"], params["bias"])


def test_cap_norm_growth_per_slice_and_state():
    w = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    u = jnp.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])  # grows row 0 only
    tx = layca_optax.cap_norm_growth(0.1, axis=1)
    state = tx.init(w)
    np.testing.assert_allclose(state.initial_norms, [[1.0], [2.0]])
    update = jax.jit(tx.update)
    out, _ = update(u, state, w)
    new = np.asarray(w + out)
    np.testing.assert_allclose(new[0], np.array([1.0, 1.0, 0]) * 1.1 / 2**0.5)
    np.testing.assert_allclose(new[1], [0.0, 1.0, 0.0])  # shrinking: kept
    # The initial norm, not the current one, sets the allowed growth.
    out, _ = update(u, state, 2 * w)
    np.testing.assert_allclose(
        np.linalg.norm(2 * w[0] + out[0]), 2.0 + 0.1, rtol=1e-6
    )


def hyperball_reference(w, u, lr, eps=1e-10):
    r, nu = np.linalg.norm(w), np.linalg.norm(u)
    step = 0 * u if nu <= eps else u / nu * r
    new = w - lr * step
    return new * r / np.linalg.norm(new)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_hyperball_matches_reference(dtype, base):
    lr, rtol = 0.1, 1e-5 if dtype == "float32" else 1e-12
    with jax.enable_x64(dtype == "float64"):
        params, gs = init_params(dtype), random_grads(len(RADIAL), dtype)
        make = {"sgd": lambda: None, "adam": optax.scale_by_adam}[base]
        got = run_jax(layca_optax.hyperball(lr, make()), params, gs, dtype)
    w = {k: np.float64(params[k]) for k in SHAPES}
    bases = {k: reference.Base(base, s, np.float64) for k, s in SHAPES.items()}
    for t, (g, c) in enumerate(zip(gs, RADIAL, strict=True)):
        w = {
            k: hyperball_reference(
                p, bases[k].direction(g[k] + c * p), lr, eps=1e-10
            )
            for k, p in w.items()
        }
        for k in SHAPES:
            assert_close(np.float64(got[t][k]), w[k], rtol)
            np.testing.assert_allclose(
                np.linalg.norm(np.float64(got[t][k])),
                np.linalg.norm(np.float64(params[k])),
                rtol=1e-5 if dtype == "float32" else 1e-12,
            )


def angle_formula(w, u, lr):
    """Hyperball's turn: atan2(lr sin(phi), 1 - lr cos(phi))."""
    cos = np.vdot(w, u) / (np.linalg.norm(w) * np.linalg.norm(u))
    return np.arctan2(lr * np.sqrt(1 - cos**2), 1 - lr * cos)


def test_hyperball_angle_is_not_fixed_and_follows_the_formula():
    lr = 0.2
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    tx = layca_optax.hyperball(lr)
    update = jax.jit(tx.update)
    angles = []
    for c in [-3.0, -0.5, 0.0, 0.5, 3.0]:  # from inward to outward
        g = (rng.normal(size=w.shape) + c * w).astype(np.float32)
        u, _ = update(g, tx.init(w), w)
        new = np.float64(w + u)
        theta = np.arctan(float(layca_optax.rotation_rate(new, w)))
        np.testing.assert_allclose(theta, angle_formula(w, g, lr), rtol=1e-5)
        np.testing.assert_allclose(
            np.linalg.norm(new), np.linalg.norm(w), rtol=1e-6
        )
        angles.append(theta)
    # Layca would turn by arctan(lr) = 0.197 every time.
    assert max(angles) - min(angles) > 0.1, angles
    assert max(angles) <= np.arcsin(lr) * (1 + 1e-6)


def test_hyperball_over_muon():
    dims = lambda tree: jax.tree.map(lambda _: MuonDimensionNumbers(), tree)
    shapes = {"a": (8, 6), "b": (6, 4)}
    rng = np.random.default_rng(4)
    params = {
        k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()
    }
    params["bias"] = np.zeros(4, np.float32)
    gs = [
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        for _ in range(3)
    ]
    lr = 0.05
    tx = layca_optax.hyperball(lr, scale_by_muon(weight_dimension_numbers=dims))
    muon = scale_by_muon(weight_dimension_numbers=dims)  # the direction alone

    @jax.jit
    def step(params, state, muon_state, g):
        grads = dict(g, bias=jnp.ones(4))
        updates, state = tx.update(grads, state, params)
        direction, muon_state = muon.update(g, muon_state)
        return (
            optax.apply_updates(params, updates),
            state,
            muon_state,
            direction,
        )

    state, muon_state = tx.init(params), muon.init(gs[0])
    w = {k: np.float64(params[k]) for k in shapes}
    current = params
    for g in gs:
        old = current
        current, state, muon_state, d = step(current, state, muon_state, g)
        for k in shapes:
            want = hyperball_reference(w[k], np.float64(d[k]), lr)
            assert_close(np.float64(current[k]), want, 1e-5)
            w[k] = want
            theta = np.arctan(
                float(layca_optax.rotation_rate(current[k], old[k]))
            )
            np.testing.assert_allclose(
                theta,
                angle_formula(np.float64(old[k]), np.float64(d[k]), lr),
                rtol=1e-4,
            )
            # Muon's direction, not the gradient's: nearly orthogonal, with
            # singular values in about [0.5, 1.5] (the gradient's: 0.5 to 4).
            sv = np.linalg.svd(np.float64(d[k]), compute_uv=False)
            assert 0.5 < sv.min() and sv.max() < 1.5, sv
            np.testing.assert_allclose(
                np.linalg.norm(np.float64(current[k])),
                np.linalg.norm(np.float64(params[k])),
                rtol=1e-5,
            )
        np.testing.assert_array_equal(current["bias"], params["bias"])


def test_zero_direction_and_zero_weights_stay_finite():
    params = {"a": jnp.zeros((3, 3)), "b": jnp.ones((3, 3))}
    grads = {"a": jnp.ones((3, 3)), "b": jnp.zeros((3, 3))}
    for tx in [layca_optax.layca_lars(0.1), layca_optax.hyperball(0.1)]:
        # Every full optimizer warns about zero layers (_builder.py).
        with pytest.warns(UserWarning, match="these layers are zero: a"):
            state = tx.init(params)
        updates, _ = jax.jit(tx.update)(grads, state, params)
        for k in params:
            np.testing.assert_array_equal(updates[k], 0.0)


class TestMisuse:
    """Bad hyperparameters of `hyperball`, `layca_lars` and
    `cap_norm_growth`: a ValueError naming the function and the argument."""

    @pytest.mark.parametrize(
        "build,match",
        [
            (
                lambda: layca_optax.layca_lars(-1.0),
                r"layca_lars\(learning_rate",
            ),
            (
                lambda: layca_optax.layca_lars(0.1, max_growth=-1e-4),
                r"layca_lars\(max_growth=.*-0\.0001",
            ),
            (lambda: layca_optax.layca_lars(0.1, base=3), r"layca_lars\(base"),
            (
                lambda: layca_optax.hyperball(0.1, eps=float("nan")),
                r"hyperball\(eps",
            ),
            (
                lambda: layca_optax.hyperball(0.1, other="sgd"),
                r"hyperball\(other",
            ),
            (
                lambda: layca_optax.hyperball(0.1, mask={"a": 1}),
                r"hyperball\(mask",
            ),
            (lambda: layca_optax.hyperball(0.1, axis="x"), r"hyperball\(axis"),
            (
                lambda: layca_optax.cap_norm_growth(float("inf")),
                r"cap_norm_growth\(max_growth=.*inf",
            ),
        ],
    )
    def test_bad_hyperparameters_raise_at_construction(self, build, match):
        with pytest.raises(ValueError, match=match):
            build()

    def test_update_without_params_raises(self):
        tx = layca_optax.cap_norm_growth()
        w = jnp.ones((2, 2))
        with pytest.raises(ValueError, match="cap_norm_growth"):
            tx.update(w, tx.init(w))
