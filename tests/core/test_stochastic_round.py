"""Stochastic rounding to bfloat16 and float16 (issue 23, item 3): the
primitive, against the two neighbours computed from each dtype's full list
of values (tests/lowprec.py); Layca's use of it in test_low_precision.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from layca_optax import _rounding as rnd
from tests.lowprec import LOW, neighbours, stored


@pytest.mark.parametrize("dtype", LOW)
def test_stochastic_round_is_unbiased_to_the_two_neighbours(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(size=12),
            rng.normal(size=4) * 1e-3,
            [1.001, -1.001, 0.999, 3e-6, -4e-7, 1e-7],  # float16 subnormals
        ]
    ).astype(np.float32)
    lo, hi = neighbours(x, dtype)
    draws = 4096
    keys = jax.random.split(jax.random.key(1), draws)
    r = jax.jit(jax.vmap(lambda k: rnd.stochastic_round(x, k, dtype)))(keys)
    assert r.dtype == dtype
    r = np.asarray(r, np.float64)
    assert np.all((r == lo) | (r == hi))
    p = np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), 0)
    up = (r == hi).mean(axis=0)
    sigma = np.sqrt(p * (1 - p) / draws)
    np.testing.assert_array_less(np.abs(up - p), 5 * sigma + 1e-9)
    np.testing.assert_allclose(r.mean(axis=0), x, rtol=0, atol=1e-2 * hi.max())


@pytest.mark.parametrize("dtype", LOW)
def test_special_values_stay(dtype):
    x = jnp.asarray([0.0, -0.0, 1.0, -0.5, jnp.inf, -jnp.inf, jnp.nan])
    for seed in range(4):
        r = rnd.stochastic_round(x, jax.random.key(seed), dtype)
        np.testing.assert_array_equal(r, x.astype(dtype))
    big = jnp.asarray([1e5, -7e4])  # beyond float16: inf, as the cast
    if dtype == jnp.float16:
        r = rnd.stochastic_round(big, jax.random.key(0), dtype)
        np.testing.assert_array_equal(r, big.astype(dtype))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.slow  # 2 s on 2 cores: out of `make test-fast`
def test_apply_updates_lands_on_the_rounded_point(dtype, jit):
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(64, 64)), dtype)
    w32 = w.astype(jnp.float32)
    step = rng.normal(size=w.shape) * 0.03  # Layca's at lr 3^-3
    r = rnd.stochastic_round(w32 + step, jax.random.key(2), dtype)
    r32 = r.astype(jnp.float32)
    u = (r32 - w32).astype(dtype)  # as rnd.rounded_update returns it
    apply = jax.jit(optax.apply_updates) if jit else optax.apply_updates
    landed = np.asarray(stored(apply(w, u)), np.float64)
    r64, w64 = np.asarray(r, np.float64), np.asarray(w, np.float64)
    sterbenz = (w64 / 2 <= r64) & (r64 <= 2 * w64) | (
        (2 * w64 <= r64) & (r64 <= w64 / 2)  # negative
    )
    assert sterbenz.mean() > 0.95
    np.testing.assert_array_equal(landed[sterbenz], r64[sterbenz])
    # Elsewhere (an entry more than halved or doubled): within an ulp of
    # the update, which is then at least half the entry.
    ulp = float(jnp.finfo(dtype).eps) * np.abs(r64 - w64)
    assert np.all(np.abs(landed - r64) <= ulp + 1e-30)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_rounded_norm_is_the_target_in_expectation(dtype):
    # Stochastic rounding alone adds its variance V to ||x||^2 in
    # expectation; rounded_update scales x to cancel it: E||w + u||^2 =
    # ||x||^2. With the same keys the two differ by V (paired, so the
    # rounding's noise mostly cancels): checked against an independent V.
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(32, 32)), dtype)
    w32 = w.astype(jnp.float32)
    x = w32 + jnp.asarray(rng.normal(size=w.shape) * 3e-3, jnp.float32)
    keys = jax.random.split(jax.random.key(4), 4096)

    def squares(k):
        new = w32 + rnd.rounded_update((0, 1), x, w, k).astype(jnp.float32)
        plain = rnd.stochastic_round(x, k, dtype).astype(jnp.float32)
        return jnp.sum(new * new), jnp.sum(plain * plain)

    xx = float(jnp.sum(x * x))
    new, plain = (
        np.asarray(v, np.float64) / xx for v in jax.vmap(squares)(keys)
    )
    lo, hi = neighbours(x, dtype)
    p = (np.asarray(x, np.float64) - lo) / (hi - lo)
    v = np.sum(p * (1 - p) * (hi - lo) ** 2) / xx  # measured: 4.9e-6 (bf16)
    diff, se = (plain - new).mean(), (plain - new).std() / np.sqrt(len(new))
    assert abs(diff - v) < 5 * se + 0.05 * v, (diff, v, se)
    assert abs(new.mean() - 1) < 5 * new.std() / np.sqrt(len(new))
