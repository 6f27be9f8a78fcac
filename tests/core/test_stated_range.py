"""The stated range made true (issue 24, part 4): tests at its boundaries.

Each case is one of the adversarial pass's findings, checked against
NumPy in float64 under ``jit``: the chain's own range (its intermediate
values carry the rate), negative and NaN rates alike on both paths, the
top of float32's range (the NaN-propagation sums used to overflow first),
tiny layers (a product of coefficients used to underflow; the chain's
reprojection dropped an update whose squares underflow), ``layer_rotation``
when the norm also changes, the fused step's norm near parallel directions,
and float16 Adam.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from tests import reference
from tests.core.test_fuzz_edges import metric_bound


EPS32 = float(np.finfo(np.float32).eps)
pytestmark = pytest.mark.filterwarnings("ignore:.*would drift:UserWarning")


def _new(lr, w, d, fused=True, steps=1):
    """The weights after ``steps`` jitted steps of layca (every leaf a
    layer, the plain gradient ``d`` as direction)."""
    tx = layca_optax.layca(lr, fused=fused, mask=True)
    state = tx.init(w)
    update = jax.jit(tx.update)
    for _ in range(steps):
        u, state = update(d, state, w)
        w = optax.apply_updates(w, u)
    return w


def _angle_and_norm(old, new):
    """The angle between two arrays and their norm ratio, in float64."""
    a = np.asarray(old, np.float64).ravel()
    b = np.asarray(new, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    across = np.linalg.norm(b - (a @ b) / na**2 * a)
    return np.arctan2(across, a @ b / na), nb / na


def _metrics(old, new):
    """``layer_rotation`` and ``rotation_rate`` of float32 arrays, and the
    1 - cos and tan of their angle in float64 (the rounding of the inputs
    to float32 moves a small angle by more than the metrics' error)."""
    o, n = jnp.asarray(old, jnp.float32), jnp.asarray(new, jnp.float32)
    cos = float(layca_optax.layer_rotation(n, o))
    rate = float(layca_optax.rotation_rate(n, o))
    angle, _ = _angle_and_norm(o, n)
    return cos, rate, 2 * np.sin(angle / 2) ** 2, np.tan(angle)


def _rotated(w, theta, growth, seed):
    """``(1 + growth)`` times ``w`` turned by ``theta`` (float64 NumPy)."""
    w = np.asarray(w, np.float64)
    v = np.random.default_rng(seed).normal(size=w.shape)
    v -= (v * w).sum() / (w * w).sum() * w
    v *= np.linalg.norm(w) / np.linalg.norm(v)
    return (1 + growth) * (np.cos(theta) * w + np.sin(theta) * v)


def test_chain_range_carries_the_rate():
    # w = full((2, 2), 1e17), d = eye(2) * 1e17: the case.
    w, d = jnp.full((2, 2), 1e17), jnp.eye(2) * 1e17
    for lr in (10.0, 1e3):
        angle, ratio = _angle_and_norm(w, _new(lr, w, d))
        assert abs(angle - np.arctan(lr)) < 4 * EPS32
        assert abs(ratio - 1) < 1e-6
    # The chain's range: RMS times max(1, lr) within 1.8e19 / sqrt(n).
    angle, ratio = _angle_and_norm(w, _new(10.0, w, d, fused=False))
    assert abs(angle - np.arctan(10)) < 4 * EPS32 and abs(ratio - 1) < 1e-6
    beyond = _new(1e3, w, d, fused=False)  # 1e20 entries: NaN, not wrong
    assert np.isnan(np.asarray(beyond)).all()


def _scheduled_turns(values, fused, inject=False):
    """The angle of each step under a schedule of ``values``."""
    w = jax.random.normal(jax.random.key(0), (4, 4))
    d = jax.random.normal(jax.random.key(1), (4, 4))
    rates = jnp.asarray(values)
    sched = lambda c: rates[jnp.minimum(c, len(values) - 1)]  # noqa: E731
    if inject:
        tx = optax.inject_hyperparams(layca_optax.layca)(
            learning_rate=sched, fused=fused, mask=True
        )
    else:
        tx = layca_optax.layca(sched, fused=fused, mask=True)
    state, turns = tx.init(w), []
    update = jax.jit(tx.update)
    for _ in values:
        u, state = update(d, state, w)
        new = optax.apply_updates(w, u)
        moved = not np.array_equal(np.asarray(new), np.asarray(w))
        turns.append(_angle_and_norm(w, new)[0] if moved else 0.0)
        w = new
    return turns


@pytest.mark.parametrize("inject", [False, True])
def test_negative_and_nan_rates_alike_on_both_paths(inject):
    values = [0.1, -0.1, 0.2, float("nan")]
    for fused in (True, False):
        turns = _scheduled_turns(values, fused, inject)
        np.testing.assert_allclose(turns[0], np.arctan(0.1), rtol=1e-5)
        assert turns[1] == 0  # negative: no update (the chain turned 0.1)
        np.testing.assert_allclose(turns[2], np.arctan(0.2), rtol=1e-5)
        assert np.isnan(turns[3])  # NaN: NaN (the fused step made none)


@pytest.mark.parametrize("norm", [1e19, 1.1e19, 1.5e19, 1.79e19])
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_top_of_the_range(norm):
    w = jnp.full((2, 2), norm / 2)
    assert float(layca_optax.layer_rotation(w, w)) == 0
    assert float(layca_optax.rotation_rate(w, w)) == 0
    d = jnp.asarray([[1.0, -1.0], [1.0, -1.0]]) * (norm / 2)
    for fused in (True, False):
        angle, ratio = _angle_and_norm(w, _new(0.1, w, d, fused))
        assert abs(np.tan(angle) / 0.1 - 1) < 1e-5 and abs(ratio - 1) < 1e-6


@pytest.mark.parametrize("norm", [1e18, 9e18])
@pytest.mark.parametrize("theta", [1e-2, 1.0, 3.0])
def test_metrics_near_the_top_at_any_angle(norm, theta):
    # ||new - old|| <= 2 ||old||: below 1.8e19 for norms up to 9e18.
    old = np.full((4, 4), norm / 4)
    new = _rotated(old, theta, 0.0, seed=1)
    cos = layca_optax.layer_rotation(jnp.asarray(new), jnp.asarray(old))
    np.testing.assert_allclose(
        float(cos), 2 * np.sin(theta / 2) ** 2, rtol=1e-5
    )


def test_tiny_layer_and_huge_direction_turns():
    # Weights at 1e-15, a direction at 1e18, lr 1e-6: a product of the
    # fused step's coefficients underflowed (no turn), and the chain's
    # reprojection dropped the step, whose squares underflow.
    w = np.random.default_rng(2).normal(size=(8, 8)) * 1e-15
    d = np.random.default_rng(3).normal(size=(8, 8)) * 1e18
    w, d = np.float32(w).astype(np.float64), np.float32(d).astype(np.float64)
    want = reference.layca_step(w, 1e-6 * d, 1e-6) - w
    for fused in (True, False):
        tx = layca_optax.layca(1e-6, fused=fused, mask=True)
        w32, d32 = jnp.asarray(w, jnp.float32), jnp.asarray(d, jnp.float32)
        u, _ = jax.jit(tx.update)(d32, tx.init(w32), w32)
        error = np.linalg.norm(np.asarray(u, np.float64) - want)
        assert error <= 1e-5 * np.linalg.norm(want), fused


@pytest.mark.parametrize("scale", [1e-15, 1e-10, 1.0])
def test_metrics_resolve_a_turn_above_the_underflow(scale):
    # A turn reads right when the difference's entries are normal floats
    # (scale * theta above about 1e-18), and 0 (never garbage) below.
    old = np.random.default_rng(3).normal(size=(16, 16)) * scale
    for theta in (1e-5, 1e-3, 1e-1):
        cos, rate, want_cos, want_tan = _metrics(
            old, _rotated(old, theta, 0.0, seed=4)
        )
        if scale * theta >= 1e-18:
            np.testing.assert_allclose(cos, want_cos, rtol=1e-5)
            np.testing.assert_allclose(rate, want_tan, rtol=1e-5)
        else:
            assert cos == 0 and rate == 0


@pytest.mark.parametrize("growth", [0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0, -0.9])
def test_layer_rotation_when_the_norm_changes(growth):
    # Relative error 16 eps min(1 + (r / t)^2, 1 / sin^2), and a few
    # eps absolute: a 1e-4 rad turn with 1% growth read 13% off before.
    old = np.random.default_rng(5).normal(size=(64, 64))
    for theta in (1e-4, 1e-3, 1e-2, 0.1, 1.0, 3.0):
        new = _rotated(old, theta, growth, seed=6)
        cos, rate, want_cos, want_tan = _metrics(old, new)
        rel = metric_bound(np.float32(old), np.float32(new))
        error = abs(cos - want_cos)
        assert error <= 8 * EPS32, theta  # a few eps absolute
        if theta < np.pi / 4:  # and relative below 45 degrees
            assert error <= rel * want_cos, (theta, cos, want_cos)
        if theta < 1.5:
            assert abs(rate / want_tan - 1) <= rel, (theta, rate)


@pytest.mark.parametrize("lr", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("degrees", [0.15, 1.0, 10.0, 90.0])
@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_fused_norm_near_parallel_directions(lr, degrees):
    # The fused step's norm changes by at most lr^2 / (1 + lr^2) * 2 eps /
    # sin^2 of the direction's angle to the weights; its turn's tan by 2
    # eps / sin^2 (the chain: the norm by a few eps, the tan by (1 + lr) 2
    # eps / sin, the radial residue of its projection times the rate).
    theta = np.radians(degrees)
    w = np.float32(np.random.default_rng(7).normal(size=(64, 64)))
    d = np.float32(-_rotated(w, theta, 0.0, seed=8))
    sin2 = np.sin(theta) ** 2
    for fused in (True, False):
        angle, ratio = _angle_and_norm(w, _new(lr, jnp.asarray(w), d, fused))
        if fused:
            norm_bound = lr**2 / (1 + lr**2) * 2 * EPS32 / sin2
            tan_bound = 2 * EPS32 / sin2
        else:
            norm_bound = 0.0
            tan_bound = (1 + lr) * 2 * EPS32 / np.sqrt(sin2)
        assert abs(ratio - 1) <= norm_bound + 4 * EPS32, ratio
        assert abs(np.tan(angle) / lr - 1) <= tan_bound + 8 * EPS32 * (1 + lr)


@pytest.mark.parametrize(
    "name", ["scale_by_adam", "scale_by_rms"], ids=["adam", "rms"]
)
def test_float16_adam_with_default_eps_warns_with_the_fix(name):
    make = getattr(optax, name)
    w = jax.random.normal(jax.random.key(4), (16, 16)).astype(jnp.float16)
    with pytest.warns(UserWarning, match=r"non-finite direction.*eps=1e-6"):
        layca_optax.layca(0.1, base=make(), mask=True).init(w)
    tx = layca_optax.layca(0.1, base=make(eps=1e-6), mask=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", ".*would drift")
        state = tx.init(w)
    for scale in (1e-1, 1e-3, 1e-4):
        g = jax.random.normal(jax.random.key(5), (16, 16)) * scale
        u, _ = jax.jit(tx.update)(g.astype(jnp.float16), state, w)
        assert bool(jnp.isfinite(u).all()), scale


def test_float32_and_bfloat16_adam_do_not_warn():
    for dtype in (jnp.float32, jnp.bfloat16):
        w = jnp.ones((4, 4), dtype)
        tx = layca_optax.layca(0.1, base=optax.scale_by_adam(), mask=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            warnings.filterwarnings("ignore", ".*would drift")
            tx.init(w)
