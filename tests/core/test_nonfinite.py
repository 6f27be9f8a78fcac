"""Non-finite gradients propagate, so optax's skipping wrappers compose."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


def params():
    rng = np.random.default_rng(0)
    return {
        "a": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
        "c": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32),
        "bias": jnp.zeros(5),
    }


def grads(seed, bad=None):
    rng = np.random.default_rng(seed)
    g = {
        k: rng.normal(size=v.shape).astype(np.float32)
        for k, v in params().items()
    }
    if bad is not None:
        g["a"][1, 2] = bad
        g["c"][0, 1] = -bad
    return jax.tree.map(jnp.asarray, g)


@pytest.mark.usefixtures("layca_path")
@pytest.mark.parametrize("base", [None, "adam"])
def test_a_nonfinite_entry_makes_its_layer_nan(base):
    direction = None if base is None else optax.scale_by_adam()
    tx = layca_optax.layca(0.1, direction, other=optax.sgd(0.1))
    p = params()
    g = grads(1, np.inf)
    g["a"] = g["a"].at[0, 0].set(jnp.nan)  # NaN and inf in a, -inf in c
    updates, _ = jax.jit(tx.update)(g, tx.init(p), p)
    assert np.isnan(updates["a"]).all()  # the whole layer, not masked
    assert np.isnan(updates["c"]).all()
    assert np.isfinite(updates["b"]).all()  # the other layers: untouched
    assert np.isfinite(updates["bias"]).all()


def test_nonfinite_weights_give_nan_and_nan_metrics():
    tx = layca_optax.layca(0.1)
    p = params()
    p["a"] = p["a"].at[0, 0].set(jnp.inf)
    updates, _ = jax.jit(tx.update)(grads(1), tx.init(p), p)
    assert np.isnan(updates["a"]).all()
    assert np.isfinite(updates["b"]).all()
    rotation = jax.jit(layca_optax.rotation_metrics)(p, params())
    assert np.isnan(rotation["rotation/a"])
    assert np.isfinite(rotation["rotation/b"])


def run(tx, gs):
    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p = params()
    s = tx.init(p)
    for g in gs:
        p, s = step(p, s, g)
    return p, s


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_apply_if_finite_skips_the_step(bad):
    inner = layca_optax.layca(0.1, optax.trace(0.9), other=optax.sgd(0.1))
    tx = optax.apply_if_finite(inner, max_consecutive_errors=3)
    good = [grads(1), grads(2)]
    p_bad, s_bad = run(tx, [good[0], grads(7, bad), good[1]])
    p_ref, _ = run(inner, good)
    for k in p_ref:  # the non-finite step was skipped, state included
        # (to rounding: the two programs compile to different fusions)
        np.testing.assert_allclose(p_bad[k], p_ref[k], rtol=1e-6, err_msg=k)
    assert int(s_bad.total_notfinite) == 1
    assert int(s_bad.notfinite_count) == 0  # reset by the finite step


def test_multisteps_skip_not_finite_drops_the_microbatch():
    inner = layca_optax.layca(0.1, optax.trace(0.9), other=optax.sgd(0.1))

    def multi():
        return optax.MultiSteps(
            inner,
            every_k_schedule=2,
            should_skip_update_fn=optax.skip_not_finite,
        )

    gs = [grads(1), grads(2), grads(3), grads(4)]
    p_ref, _ = run(multi(), gs)
    p_bad, s_bad = run(multi(), [gs[0], grads(9, np.nan), *gs[1:]])
    for k in p_ref:
        np.testing.assert_allclose(p_bad[k], p_ref[k], rtol=1e-6, err_msg=k)
    assert int(s_bad.gradient_step) == 2  # 5 microbatches, 1 skipped


def _step(tx, p, g):
    @jax.jit
    def run(p, g):
        updates, _ = tx.update(g, tx.init(p), p)
        return optax.apply_updates(p, updates)

    return run(p, g)


@pytest.mark.usefixtures("layca_path")
@pytest.mark.parametrize("which", ["w", "g"])
@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_sums_that_overflow_give_a_nan_update_that_is_skipped(which):
    # Entries of 1e25 (squares 1e50) overflow float32 sums: the documented
    # outcome is a NaN update for that layer only. The gradients are
    # finite, so apply_if_finite around the optimizer lets it through;
    # apply_if_finite(identity) after layca skips the whole step.
    p, g = params(), grads(3)
    (p if which == "w" else g)["a"] *= jnp.float32(1e25)
    tx = layca_optax.layca(0.1, other=optax.sgd(0.1))
    updates, _ = jax.jit(tx.update)(g, tx.init(p), p)
    assert np.isnan(updates["a"]).all()
    assert np.isfinite(updates["b"]).all() and np.isfinite(updates["c"]).all()
    safe = optax.chain(tx, optax.apply_if_finite(optax.identity(), 3))
    updates, state = jax.jit(safe.update)(g, safe.init(p), p)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
    assert int(state[1].total_notfinite) == 1


@pytest.mark.usefixtures("layca_path")
@pytest.mark.parametrize("which", ["w", "g"])
def test_sums_that_underflow_leave_the_layer_unchanged(which):
    # Entries of 1e-25 (squares 1e-50) flush to zero in float32 sums: the
    # layer is treated as a zero layer (weights) or gets no step (a zero
    # direction); nothing is NaN.
    p, g = params(), grads(3)
    (p if which == "w" else g)["a"] *= jnp.float32(1e-25)
    tx = layca_optax.layca(0.1, eps=0.0)
    new = _step(tx, p, g)
    np.testing.assert_array_equal(new["a"], p["a"])
    assert not np.array_equal(new["b"], p["b"])


@pytest.mark.usefixtures("layca_path")
@pytest.mark.parametrize("scale", [1e-15, 1e15])
def test_in_range_magnitudes_turn_by_arctan_lr(scale):
    # The documented exact range: entries 1e-15 to 1e15.
    p = jax.tree.map(lambda x: x * jnp.float32(scale), params())
    g = jax.tree.map(lambda x: x * jnp.float32(scale), grads(3))
    new = _step(layca_optax.layca(0.1, eps=0.0), p, g)
    for k in ("a", "b", "c"):
        w = np.asarray(p[k], np.float64).ravel()
        w1 = np.asarray(new[k], np.float64).ravel()
        cos = np.dot(w, w1) / (np.linalg.norm(w) * np.linalg.norm(w1))
        np.testing.assert_allclose(
            np.arccos(min(cos, 1.0)), np.arctan(0.1), rtol=1e-3, err_msg=k
        )
        np.testing.assert_allclose(
            np.linalg.norm(w1), np.linalg.norm(w), rtol=1e-5, err_msg=k
        )
