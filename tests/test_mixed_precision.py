"""bfloat16 and float16 parameters: float32 reductions, bounded drift.

The 10,000-step measurements are in docs/robustness.md (from
benchmarks/drift.py); here a shorter run checks bounds with margin.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


LR = 3**-3
STEPS = 300
# Bounds for STEPS steps on one 64x32 layer, about 10x what was measured
# (drift: f32 1e-7, bf16 7e-4, f16 8e-5; median per-step angle error:
# f32 7e-9, bf16 4e-5, f16 9e-5).
BOUNDS = {  # dtype: (norm drift, median per-step angle error)
    jnp.float32: (1e-6, 1e-6),
    jnp.bfloat16: (1e-2, 5e-4),
    jnp.float16: (1e-3, 1e-3),
}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_update_is_the_float32_one_rounded(dtype):
    # The reductions and the update run in float32, then are cast once: the
    # result is the float32 computation on the same inputs, rounded.
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(16, 8)), dtype)
    g = jnp.asarray(rng.normal(size=(16, 8)), dtype)
    tx = layca_optax.layca(LR)

    @jax.jit
    def update(w, g):
        return tx.update({"k": g}, tx.init({"k": w}), {"k": w})[0]["k"]

    low = update(w, g)
    high = update(w.astype(jnp.float32), g.astype(jnp.float32))
    assert low.dtype == dtype
    np.testing.assert_array_equal(low, high.astype(dtype))


@pytest.mark.parametrize("dtype", sorted(BOUNDS, key=str))
def test_norm_drift_and_angle_error_are_bounded(dtype):
    key = jax.random.key(0)
    w0 = jax.random.normal(key, (64, 32)).astype(dtype)
    tx = layca_optax.layca(LR, optax.trace(0.9))

    @jax.jit
    def run(w):
        def body(carry, t):
            p, s = carry
            g = jax.random.normal(jax.random.fold_in(key, t), w.shape)
            u, s = tx.update({"k": g.astype(dtype)}, s, p)
            new = optax.apply_updates(p, u)
            norm = jnp.linalg.norm(new["k"].astype(jnp.float32))
            return (new, s), (norm, layca_optax.rotation_rate(new, p)["k"])

        params = {"k": w}
        _, out = jax.lax.scan(
            body, (params, tx.init(params)), jnp.arange(STEPS)
        )
        return out

    norms, tans = (np.asarray(x, np.float64) for x in run(w0))
    n0 = np.linalg.norm(np.asarray(w0, np.float64))
    drift = np.abs(norms / n0 - 1).max()
    angle = np.median(np.abs(tans / LR - 1))
    assert np.isfinite(norms).all() and np.isfinite(tans).all()
    assert drift < BOUNDS[dtype][0], drift
    assert angle < BOUNDS[dtype][1], angle
