"""The rotation-controlled family's primitives (issue 26, part 2):
``tangent_trace`` and ``radial_brake`` against NumPy in float64, under
``jit``, with ``axis``, and their invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


def _project(x, w, axes):
    """NumPy: ``x - <x, w> / ||w||^2 w`` per layer (0-norm layers: ``x``)."""
    xw = np.sum(x * w, axis=axes, keepdims=True)
    ww = np.sum(w * w, axis=axes, keepdims=True)
    k = np.divide(xw, ww, out=np.zeros_like(xw), where=ww != 0)
    return x - k * w


def _tree(seed, shapes):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


SHAPES = {"a": (4, 3), "b": (2, 3, 5)}


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("axis", [None, (-1,)], ids=["whole", "last"])
def test_tangent_trace_against_numpy(nesterov, axis):
    tx = layca_optax.tangent_trace(0.8, nesterov, axis=axis)
    params = _tree(0, SHAPES)
    state = tx.init(jax.tree.map(jnp.float32, params))
    update = jax.jit(tx.update)
    trace = jax.tree.map(np.zeros_like, params)
    for step in range(4):
        w = jax.tree.map(lambda p, s=step: p + 0.3 * s * np.cos(p), params)
        g = _tree(10 + step, SHAPES)
        f32 = lambda t: jax.tree.map(jnp.float32, t)  # noqa: E731
        u, state = update(f32(g), state, f32(w))
        for k in SHAPES:
            axes = tuple(range(w[k].ndim)) if axis is None else axis
            trace[k] = _project(g[k] + 0.8 * trace[k], w[k], axes)
            want = trace[k]
            if nesterov:
                want = _project(g[k], w[k], axes) + 0.8 * trace[k]
            np.testing.assert_allclose(u[k], want, rtol=2e-5, atol=2e-5)
            np.testing.assert_allclose(
                state.trace[k], trace[k], rtol=2e-5, atol=2e-5
            )
            # The momentum is tangent to the weights it was updated with.
            along = np.sum(np.asarray(state.trace[k]) * w[k], axis=axes)
            assert np.all(np.abs(along) <= 1e-5 * np.sum(w[k] ** 2, axis=axes))


def test_tangent_trace_as_laycas_base_turns_by_arctan_lr():
    params = {"k": jax.random.normal(jax.random.key(0), (8, 6))}
    tx = layca_optax.layca(0.1, base=layca_optax.tangent_trace(0.9))
    state = tx.init(params)
    step = jax.jit(tx.update)
    for i in range(3):
        g = {"k": jax.random.normal(jax.random.key(i + 1), (8, 6))}
        u, state = step(g, state, params)
        new = optax.apply_updates(params, u)
        a, b = (np.asarray(x["k"], np.float64).ravel() for x in (params, new))
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        np.testing.assert_allclose(np.arccos(cos), np.arctan(0.1), rtol=1e-4)
        params = new


def test_tangent_trace_zero_layer_keeps_the_plain_momentum():
    tx = layca_optax.tangent_trace(0.5)
    w = jnp.zeros((2, 2))
    u, state = tx.update(jnp.ones((2, 2)), tx.init(w), w)
    u, state = tx.update(jnp.ones((2, 2)), state, w)
    np.testing.assert_allclose(u, 1.5 * np.ones((2, 2)))


@pytest.mark.parametrize("axis", [None, (-1,)], ids=["whole", "last"])
@pytest.mark.parametrize("factor", [0.0, 0.3, 1.0])
def test_radial_brake_against_numpy(axis, factor):
    tx = layca_optax.radial_brake(factor, axis=axis)
    w, u = _tree(1, SHAPES), _tree(2, SHAPES)
    f32 = lambda t: jax.tree.map(jnp.float32, t)  # noqa: E731
    out, _ = jax.jit(tx.update)(f32(u), tx.init(f32(w)), f32(w))
    for k in SHAPES:
        axes = tuple(range(w[k].ndim)) if axis is None else axis
        ww = np.sum(w[k] ** 2, axis=axes, keepdims=True)
        r = np.sum(u[k] * w[k], axis=axes, keepdims=True) / ww
        want = u[k] - (1 - factor) * np.maximum(r, 0) * w[k]
        np.testing.assert_allclose(out[k], want, rtol=1e-5, atol=1e-6)
        # Tangential parts untouched, inward radial parts untouched.
        got_r = np.sum(np.asarray(out[k]) * w[k], axis=axes, keepdims=True)
        np.testing.assert_allclose(
            got_r / ww, np.where(r > 0, factor * r, r), rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            _project(np.asarray(out[k], np.float64), w[k], axes),
            _project(u[k], w[k], axes),
            rtol=1e-4,
            atol=1e-5,
        )


def test_radial_brake_after_adamw_slows_norm_growth():
    # A layer whose loss is scale-invariant (followed by a normalization):
    # AdamW grows its norm; the brake holds it (and weight decay shrinks).
    w0 = {"k": jax.random.normal(jax.random.key(3), (16, 8))}
    target = jax.random.normal(jax.random.key(4), (16, 8))

    def loss(p):
        k = p["k"] / jnp.linalg.norm(p["k"])
        return -jnp.sum(k * target)

    def norms(tx):
        p, s = w0, tx.init(w0)
        for _ in range(50):
            u, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
        return float(jnp.linalg.norm(p["k"]))

    plain = norms(optax.adamw(0.05, weight_decay=0.0))
    braked = norms(
        optax.chain(
            optax.adamw(0.05, weight_decay=0.0), layca_optax.radial_brake()
        )
    )
    start = float(jnp.linalg.norm(w0["k"]))
    assert plain > 1.05 * start and braked < plain


class TestMisuse:
    """Bad arguments of `tangent_trace` and `radial_brake`: a ValueError
    naming the function and the argument."""

    @pytest.mark.parametrize(
        "make, match",
        [
            (lambda: layca_optax.tangent_trace(1.0), r"tangent_trace\(decay="),
            (lambda: layca_optax.tangent_trace(-0.1), r"tangent_trace\(decay="),
            (lambda: layca_optax.tangent_trace(0.9, 1), r"nesterov="),
            (lambda: layca_optax.radial_brake(1.5), r"radial_brake\(factor="),
            (
                lambda: layca_optax.radial_brake(axis=1.5),
                r"radial_brake\(axis=",
            ),
        ],
    )
    def test_bad_arguments_name_the_function(self, make, match):
        with pytest.raises(ValueError, match=match):
            make()

    def test_update_without_params_is_refused(self):
        for tx in (layca_optax.tangent_trace(), layca_optax.radial_brake()):
            w = jnp.ones((2, 2))
            with pytest.raises(ValueError, match="params"):
                tx.update(w, tx.init(w))
