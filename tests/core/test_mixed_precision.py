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
# with stochastic rounding (drift: f32 6e-7, bf16 1.0e-3, f16 1.9e-4;
# median per-step angle error: f32 3e-7, bf16 2.3e-3, f16 1.1e-4). With
# nearest rounding the bfloat16 angle read 4e-5: measured on the float32
# sum p + u that XLA keeps inside the jit (excess precision), not on the
# stored, rounded weights.
BOUNDS = {  # dtype: (norm drift, median per-step angle error)
    jnp.float32: (1e-6, 1e-6),
    jnp.bfloat16: (1e-2, 2e-2),
    jnp.float16: (2e-3, 1e-3),
}


@pytest.mark.filterwarnings("ignore:.*would drift:UserWarning")  # 128 entries
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_low_precision_new_weights_are_the_float32_ones_rounded(dtype, fused):
    # The reductions and the update run in float32; the new weights are
    # then rounded stochastically (tests/core/test_low_precision.py), no longer
    # to nearest: each lands on one of the two values of the dtype around
    # the float32 new weights (those of float32 params with the same
    # values; to the rounding's 1e-6 norm correction); an entry that more
    # than halves, within an ulp of its update (apply_updates rounds
    # w + u once more).
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(16, 8)), dtype)
    g = jnp.asarray(rng.normal(size=(16, 8)), dtype)
    tx = layca_optax.layca(LR, fused=fused)

    @jax.jit
    def new_weights(w, g):
        u = tx.update({"k": g}, tx.init({"k": w}), {"k": w})[0]["k"]
        return u, optax.apply_updates(w, u)

    u, low = new_weights(w, g)
    _, high = new_weights(w.astype(jnp.float32), g.astype(jnp.float32))
    assert u.dtype == low.dtype == dtype
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    step = np.abs(high - np.asarray(w, np.float64))
    ulp = np.maximum(np.abs(high), step) * float(jnp.finfo(dtype).eps)
    assert np.all(np.abs(low - high) <= ulp * (1 + 1e-5))
    assert np.any(low != np.asarray(high.astype(dtype), np.float64))


@pytest.mark.parametrize("dtype", sorted(BOUNDS, key=str))
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
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
