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


def test_exact_range_false_agrees_in_range():
    # Same sums; XLA may fuse the elementwise pass differently (1 ulp).
    p, g = params(), grads(2)
    fast = _step(layca_optax.layca(0.1, exact_range=False), p, g)
    exact = _step(layca_optax.layca(0.1), p, g)
    for k in fast:
        np.testing.assert_allclose(fast[k], exact[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_exact_range_rescues_what_plain_sums_cannot(scale):
    p = params()
    g = jax.tree.map(lambda x: x * jnp.float32(scale), grads(3))
    # eps=0: at 1e-25 the authors' absolute threshold (eta |d_perp| <=
    # 1e-7) would rightly skip the step.
    exact = _step(layca_optax.layca(0.1, eps=0.0), p, g)
    fast = _step(layca_optax.layca(0.1, eps=0.0, exact_range=False), p, g)
    w, new = np.asarray(p["a"], np.float64), np.asarray(exact["a"], np.float64)
    cos = np.sum(w * new) / (np.linalg.norm(w) * np.linalg.norm(new))
    np.testing.assert_allclose(
        np.arccos(min(cos, 1.0)), np.arctan(0.1), rtol=1e-3
    )
    np.testing.assert_allclose(
        np.linalg.norm(new), np.linalg.norm(w), rtol=1e-5
    )
    if scale > 1:  # the documented plain-sum outcome: a NaN update
        assert np.isnan(np.asarray(fast["a"])).all()
    else:  # squares underflow: the layer is left unchanged
        np.testing.assert_array_equal(fast["a"], p["a"])


@pytest.mark.parametrize("fn", [layca_optax.layca, layca_optax.scale_by_layca])
def test_exact_range_must_be_a_bool(fn):
    with pytest.raises(
        ValueError,
        match=r"exact_range=\.\.\.\)` must be True or False, got 'yes'",
    ):
        fn(0.1, exact_range="yes")
