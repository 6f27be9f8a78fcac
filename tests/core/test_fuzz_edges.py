"""Property-based tests at the edges of the stated ranges (docs/robustness.md).

Two generators that reach what ``tests/core/test_fuzz.py`` does not:

- the metrics' inputs: two layers whose norms are anywhere in float32's
  range for the metrics (1e-16 to 9e18 times ``sqrt(n)``, so any ratio of
  the two norms up to about 1e34) and whose angle is anywhere from 1e-7 rad
  to 180 degrees; ``layer_rotation`` and ``rotation_rate`` must match NumPy
  in float64 to their stated bounds (relative ``16 eps min(1 + (r /
  t)^2, 1 / sin^2 theta)`` below 45 degrees, ``8 eps`` absolute
  everywhere (the sums' rounding), low
  for a turn whose difference underflows);
- the rate of a schedule or of ``optax.inject_hyperparams``, of any sign and
  size, NaN and infinities: the fused step and the chain must agree (no
  update for a negative rate, NaN for a NaN or infinite one, the same
  update otherwise);
- beyond the range: a layer whose sums overflow gets a NaN update, one
  whose squares underflow none, the other layers unaffected; and the
  metrics' scale invariance across it.

Each would have found issue 24's findings (the metrics at the top of the
range and with the norm changing; negative and NaN rates on the chain).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given, strategies as st

import layca_optax
from tests.core.test_fuzz import (
    LR,
    SETTINGS,
    SHAPES as LEAVES,
    make_inputs,
    step_fn,
)


EPS32 = float(np.finfo(np.float32).eps)
SHAPES = [(1,), (3, 4), (16, 16), (2, 3, 8)]


def _pair(shape, log_old, log_new, theta, seed):
    """Two float32 arrays: ``old`` of RMS ``10**log_old``, and ``new`` of
    RMS ``10**log_new`` at ``theta`` rad from it (float64 first)."""
    rng = np.random.default_rng(seed)
    old = rng.normal(size=shape)
    old *= 10.0**log_old / np.sqrt(np.mean(old**2))
    v = rng.normal(size=shape)
    v -= (v * old).sum() / (old * old).sum() * old
    if not np.linalg.norm(v):  # one entry: nothing across it
        v, theta = np.zeros(shape), float(np.round(theta / np.pi) * np.pi)
    else:
        v *= np.linalg.norm(old) / np.linalg.norm(v)
    new = np.cos(theta) * old + np.sin(theta) * v
    new *= 10.0 ** (log_new - log_old)
    return np.float32(old), np.float32(new)


def _truth(old, new):
    """1 - cos and tan of the angle between the float32 arrays, the RMS of
    their difference and their relative norm change, in float64."""
    a, b = (np.asarray(x, np.float64).ravel() for x in (old, new))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    along = a @ b / na
    across = np.linalg.norm(b - along * a / na)
    angle = np.arctan2(across, along)
    rms_d = np.sqrt(np.mean((b - a) ** 2))
    return 2 * np.sin(angle / 2) ** 2, np.tan(angle), angle, rms_d, nb / na - 1


def metric_bound(old, new):
    """The metrics' stated relative error below 45 degrees (see
    docs/robustness.md): ``16 eps min(1 + (r / t)^2, 1 / sin^2 theta)``,
    ``r`` and ``t`` the parts of ``new - old`` along and across ``old``
    (``r / t`` is about ``g / ((1 + g) theta)`` for a relative norm change
    ``g``): the part across is computed from ``new - old`` or from
    ``new``, whichever is smaller, and loses its rounding relative to that
    one's square."""
    a, b = (np.asarray(x, np.float64).ravel() for x in (old, new))
    d = b - a
    r = d @ a / np.linalg.norm(a)
    t = np.linalg.norm(d - r * a / np.linalg.norm(a))
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    sin2 = max(1 - min(cos, 1.0) ** 2, 1e-300)
    ratio2 = (r / t) ** 2 if t else math.inf
    return 16 * EPS32 * min(1 + ratio2, 1 / sin2)


@functools.cache
def _metrics():
    @jax.jit
    def both(new, old):
        return (
            layca_optax.layer_rotation(new, old, mask=True),
            layca_optax.rotation_rate(new, old, mask=True),
        )

    return both


@SETTINGS
# Found by make fuzz: 1 rad with a norm ratio of 3.2 read 3.3e-7 off
# (2.8 eps: the rounding of three sums of 256 products); 0.1 rad with a
# ratio of 0.01, 1e-4 relative (the part across from ``new``: eps / sin^2);
# 0.01 rad, 8.8 eps relative; a layer shrunk by 26% at 0.02 rad, 4.2e-4
# relative (the bound's r / t, not g / theta: shrinking raises it).
@example(shape=(16, 16), log_old=0.0, log_new=0.5, log_theta=0.0, seed=0)
@example(shape=(16, 16), log_old=0.0, log_new=-2.0, log_theta=-1.0, seed=1)
@example(shape=(16, 16), log_old=0.0, log_new=0.0, log_theta=-2.0, seed=1)
@example(
    shape=(16, 16),
    log_old=-2.766619982655925,
    log_new=-2.895526232655925,
    log_theta=-1.6953125,
    seed=0,
)
@given(
    shape=st.sampled_from(SHAPES),
    log_old=st.floats(-16, 18.5),
    log_new=st.floats(-16, 18.5),
    log_theta=st.floats(-7, math.log10(math.pi)),
    seed=st.integers(0, 2**32 - 1),
)
def test_metrics_over_norm_ratios_angles_and_magnitudes(
    shape, log_old, log_new, log_theta, seed
):
    # RMS up to 10**18.5 / sqrt(n) keeps every norm below 9e18.
    n = math.prod(shape)
    log_old -= math.log10(math.sqrt(n))
    log_new -= math.log10(math.sqrt(n))
    old, new = _pair(shape, log_old, log_new, 10.0**log_theta, seed)
    cos, rate = (float(x) for x in _metrics()(new, old))
    want_cos, want_tan, angle, rms_d, growth = _truth(old, new)
    assert math.isfinite(cos) and not math.isnan(rate)
    assert abs(cos - want_cos) <= 8 * EPS32, (cos, want_cos)
    if rms_d < 1e-18 or angle == 0:
        return  # the difference's squares underflow: may read 0
    rel = metric_bound(old, new)
    if angle < math.pi / 4:
        assert abs(cos - want_cos) <= rel * want_cos, (cos, want_cos)
    if angle < 1.5:
        assert abs(rate - want_tan) <= rel * want_tan, (rate, want_tan)


@functools.cache
def _update(fused):
    tx = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=0.1, fused=fused, mask=True
    )

    @jax.jit
    def step(w, g, lr):
        state = tx.init(w)
        state.hyperparams["learning_rate"] = lr
        return tx.update(g, state, w)[0]

    return step


RATES = st.one_of(
    st.floats(-1e6, 1e6),
    st.floats(-1e-6, 1e-6),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e6, -1e6]),
)


@SETTINGS
@given(
    lr=RATES,
    log_w=st.floats(-15, 8),
    log_g=st.floats(-15, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_and_chain_agree_on_rates_of_any_sign(lr, log_w, log_g, seed):
    # Magnitudes within the chain's range for every rate up to 1e6.
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(6, 5)) * 10.0**log_w, jnp.float32)
    g = jnp.asarray(rng.normal(size=(6, 5)) * 10.0**log_g, jnp.float32)
    lr32 = jnp.float32(lr)
    fused, chain = (np.asarray(_update(f)(w, g, lr32)) for f in (True, False))
    if math.isnan(lr) or math.isinf(lr):
        assert np.isnan(fused).all() and np.isnan(chain).all(), lr
    elif lr <= 0:
        assert not fused.any() and not chain.any(), lr
    else:
        scale = np.linalg.norm(np.asarray(w))
        np.testing.assert_allclose(chain, fused, rtol=0, atol=2e-6 * scale)


@SETTINGS
@given(
    leaf=st.sampled_from(["dense", "conv", "vector"]),
    which=st.sampled_from(["w", "g"]),
    log=st.one_of(st.floats(-30, -20), st.floats(20, 30)),
    base=st.sampled_from(["sgd", "momentum"]),
    fused=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_out_of_range_layers_get_nan_or_no_update(
    leaf, which, log, base, fused, seed
):
    case = {
        "seed": seed,
        "dtype": "float32",
        "zero": None,
        "w_log": dict.fromkeys(LEAVES, 0.0),
        "g_log": dict.fromkeys(LEAVES, 0.0),
    }
    case[f"{which}_log"][leaf] = log
    params, grads = make_inputs(case)
    new, updates, _, _ = jax.device_get(
        step_fn("none", base, fused)(params, grads, LR)
    )
    if log > 0:  # the sums overflow: a NaN update for that layer
        assert np.isnan(updates[leaf]).all(), (leaf, updates[leaf])
    else:  # the squares underflow: the layer is left unchanged
        np.testing.assert_array_equal(new[leaf], params[leaf])
    for k in ("dense", "conv", "vector"):
        if k != leaf:
            assert np.isfinite(updates[k]).all(), k


@pytest.mark.parametrize("log_scale", [-15, -10, 0, 10, 15])
def test_rotation_metrics_are_scale_invariant(log_scale):
    rng = np.random.default_rng(1)
    w0 = {"k": rng.normal(size=(8, 6)), "c": rng.normal(size=(3, 3, 2, 4))}
    w1 = jax.tree.map(lambda w: w + 0.3 * rng.normal(size=w.shape), w0)
    scaled = [
        jax.tree.map(lambda w: jnp.asarray(w * 10.0**log_scale, jnp.float32), t)
        for t in (w1, w0)
    ]
    unit = [
        jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), t) for t in (w1, w0)
    ]
    got = jax.jit(layca_optax.rotation_metrics)(*scaled)
    want = jax.jit(layca_optax.rotation_metrics)(*unit)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
