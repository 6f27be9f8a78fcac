"""Optax conformance of `layca_optax.layca`, after optax's contrib suite.

The ideas of ``optax/contrib/_common_test.py`` (extra args, no
recompilation, ``inject_hyperparams``, ``MultiSteps``, ``map_params``,
dtype and state stability, schedules, convergence) ported to Layca, over
every ``base`` direction the README lists, on a small tree that mixes a 4-D
Conv kernel, a 2-D Dense kernel and 1-D biases.
"""

import contextlib
import functools
import logging
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax


# The layca_path fixture (tests/conftest.py) runs a test with `layca`'s fused
# step, then with its chain of primitives: only tests that build a `layca`
# through `layca_optax.layca` take it.
both_paths = pytest.mark.usefixtures("layca_path")


LR = 0.1
KERNELS = ("conv/kernel", "dense/kernel")

BASES = {
    "sgd": None,
    "momentum": optax.trace(0.9),
    "nesterov": optax.trace(0.9, nesterov=True),
    "adam": optax.scale_by_adam(),
    "rms": optax.scale_by_rms(),
    "rss": optax.scale_by_rss(),
    "amom": optax.ema(0.9, debias=False),
    "lion": optax.scale_by_lion(),
}
with_bases = pytest.mark.parametrize("name", list(BASES))


def _normal(rng, shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _random_tree(seed):
    """Conv kernel (4-D), Dense kernel (2-D) and their biases (1-D)."""
    rng = np.random.default_rng(seed)
    return {
        "conv": {
            "kernel": _normal(rng, (3, 3, 2, 4)),
            "bias": _normal(rng, (4,)),
        },
        "dense": {"kernel": _normal(rng, (8, 3)), "bias": _normal(rng, (3,))},
    }


PARAMS = _random_tree(0)
# One gradient per step, nowhere parallel to the kernels, of varying scale.
GRADS = [
    jax.tree.map(lambda g, s=s: s * g, _random_tree(10 + i))
    for i, s in enumerate([1.0, 3.0, 0.5, 2.0, 1.5])
]


def _plain(name):
    """``layca(LR, base)`` and its jitted update, shared between tests.

    The update always gets an argument that layca does not take, as optax's
    extra-args protocol allows (``GradientTransformationExtraArgs``). Cached
    per path (fused or chain; see the ``layca_path`` fixture).
    """
    path = getattr(layca_optax.layca, "keywords", {}).get("fused", True)
    return _plain_cached(name, path)


@functools.cache
def _plain_cached(name, fused):
    del fused  # only a cache key: layca_optax.layca already carries it
    tx = layca_optax.layca(LR, base=BASES[name])
    update = functools.partial(tx.update, unexpected_extra_arg=1)
    return tx, jax.jit(update)


def _avals(tree):
    """Shapes, dtypes and weak types: what a jit cache hit needs."""
    return jax.tree.leaves(jax.tree.map(jax.typeof, tree))


def _apply(update, params, state, grads, **extra):
    updates, state = update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state


def _kernel(tree, path):
    layer, leaf = path.split("/")
    return tree[layer][leaf]


def _rates(new, old):
    """tan of each kernel's turn, as {path: float}."""
    rates = layca_optax.rotation_rate(new, old)
    assert len(jax.tree.leaves(rates)) == len(KERNELS)
    return {path: float(_kernel(rates, path)) for path in KERNELS}


def _norm(x):
    return np.linalg.norm(np.asarray(x, np.float64).ravel())


def _assert_layca_step(new, old, lr=LR, *, rtol=1e-5):
    """Kernels turned by arctan(lr) with norms kept; biases untouched."""
    chex.assert_tree_all_finite(new)
    rates = _rates(new, old)
    lrs = lr if isinstance(lr, dict) else dict.fromkeys(KERNELS, lr)
    for path in KERNELS:
        np.testing.assert_allclose(rates[path], lrs[path], rtol=rtol)
        np.testing.assert_allclose(
            _norm(_kernel(new, path)), _norm(_kernel(old, path)), rtol=1e-6
        )
    for layer in ("conv", "dense"):
        np.testing.assert_array_equal(new[layer]["bias"], old[layer]["bias"])


@contextlib.contextmanager
def _log_compilations():
    """Collects JAX's 'Finished ... compilation' log messages (as optax's
    ``test_utils.log_compilations`` does)."""
    records = []

    class _Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if re.search(r"Finished .* compilation", message):
                records.append(message)

    handler = _Handler()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield records
    finally:
        logger.removeHandler(handler)


# --- extra args, compilation ----------------------------------------------


@both_paths
@with_bases
@pytest.mark.slow  # 7 s on 2 cores: out of `make test-fast`
def test_extra_args_and_no_recompilation(name):
    tx, update = _plain(name)  # passes `unexpected_extra_arg=1`
    state0 = tx.init(PARAMS)
    new, state = _apply(update, PARAMS, state0, GRADS[0])
    _assert_layca_step(new, PARAMS)
    # Whatever ran before: the second call reuses the first's compilation.
    assert _avals(state) == _avals(state0)
    with _log_compilations() as compilations:
        newer, state = _apply(update, new, state, GRADS[1])
    assert not compilations, compilations
    _assert_layca_step(newer, new)


def test_compilation_log_sees_a_recompilation():
    """The compilation log above is live: a new shape does recompile."""

    @jax.jit
    def f(x):
        return x * 2

    f(jnp.ones(3))
    with _log_compilations() as compilations:
        f(jnp.ones(4))
    assert compilations


# --- inject_hyperparams -----------------------------------------------------


def _with_hyperparam(state, key, value):
    return state._replace(
        hyperparams={**state.hyperparams, key: jnp.asarray(value, jnp.float32)}
    )


@both_paths
@with_bases
@pytest.mark.slow  # 8 s on 2 cores: out of `make test-fast`
def test_inject_hyperparams_matches_plain_and_lr_is_live(name):
    plain, update_plain = _plain(name)
    injected = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=LR, base=BASES[name]
    )
    update_inj = jax.jit(injected.update)
    p_plain = p_inj = PARAMS
    s_plain, s_inj = plain.init(p_plain), injected.init(p_inj)
    for g in GRADS[:4]:
        p_plain, s_plain = _apply(update_plain, p_plain, s_plain, g)
        p_inj, s_inj = _apply(update_inj, p_inj, s_inj, g)
    chex.assert_trees_all_close(p_inj, p_plain, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(
        s_inj.inner_state, s_plain, rtol=1e-6, atol=1e-7
    )

    np.testing.assert_allclose(s_inj.hyperparams["learning_rate"], LR)
    new_lr = 0.05
    s_inj = _with_hyperparam(s_inj, "learning_rate", new_lr)
    p_new, s_inj = _apply(update_inj, p_inj, s_inj, GRADS[4])
    _assert_layca_step(p_new, p_inj, new_lr)
    np.testing.assert_allclose(s_inj.hyperparams["learning_rate"], new_lr)


@both_paths
def test_inject_hyperparams_with_alpha():
    order = list(KERNELS)  # conv (input side) first
    alpha, base = 0.5, optax.scale_by_adam()
    plain = layca_optax.layca(LR, base=base, alpha=alpha, layer_order=order)
    injected = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=LR, base=base, alpha=alpha, layer_order=order
    )
    update_plain, update_inj = jax.jit(plain.update), jax.jit(injected.update)
    p_plain = p_inj = PARAMS
    s_plain, s_inj = plain.init(p_plain), injected.init(p_inj)
    m_first, m_last = layca_optax.depth_multipliers(alpha, 2)
    assert m_first < m_last
    for g in GRADS[:3]:
        old = p_inj
        p_plain, s_plain = _apply(update_plain, p_plain, s_plain, g)
        p_inj, s_inj = _apply(update_inj, p_inj, s_inj, g)
        _assert_layca_step(
            p_inj, old, {"conv/kernel": LR * m_first, "dense/kernel": LR}
        )
    chex.assert_trees_all_close(p_inj, p_plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s_inj.hyperparams["alpha"], alpha)

    # alpha < 0: the input side turns fastest.
    s_inj = _with_hyperparam(s_inj, "alpha", -alpha)
    m_first, m_last = layca_optax.depth_multipliers(-alpha, 2)
    assert m_first > m_last
    p_new, _ = _apply(update_inj, p_inj, s_inj, GRADS[3])
    _assert_layca_step(
        p_new, p_inj, {"conv/kernel": LR, "dense/kernel": LR * m_last}
    )


# --- MultiSteps -------------------------------------------------------------


# Base states of each kind (none, a trace, Adam's, Lion's). The stable state
# shapes and dtypes that MultiSteps' lax.cond needs are checked for every
# base by the bf16 and state tests below.
@both_paths
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "lion"])
@pytest.mark.slow  # 6 s on 2 cores: out of `make test-fast`
def test_multisteps_is_one_step_on_the_mean_gradient(name):
    tx, update_plain = _plain(name)
    multi = optax.MultiSteps(tx, every_k_schedule=3)
    update = jax.jit(multi.update)
    state = multi.init(PARAMS)
    current = PARAMS
    for i, g in enumerate(GRADS[:3]):
        new, state = _apply(update, current, state, g)
        if i < 2:
            chex.assert_trees_all_equal(new, current)
        current = new
    _assert_layca_step(current, PARAMS)

    mean = jax.tree.map(lambda *g: sum(g) / 3, *GRADS[:3])
    expected, _ = _apply(update_plain, PARAMS, tx.init(PARAMS), mean)
    chex.assert_trees_all_close(current, expected, rtol=1e-5, atol=1e-6)


# --- map_params -------------------------------------------------------------


def _assert_map_params(tx, state):
    same = optax.tree.map_params(tx, lambda v: v, state)
    chex.assert_trees_all_equal(same, state)
    # Make every float buffer nonzero so that doubling is visible.
    state = jax.tree.map(
        lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x,
        state,
    )
    doubled = optax.tree.map_params(tx, lambda v: 2 * v, state)
    chex.assert_trees_all_equal_structs(doubled, state)
    for new, old in zip(
        jax.tree.leaves(doubled), jax.tree.leaves(state), strict=True
    ):
        if jnp.issubdtype(old.dtype, jnp.floating):  # per-param buffers
            np.testing.assert_array_equal(new, 2 * old)
        else:  # step counters
            np.testing.assert_array_equal(new, old)


@both_paths
@with_bases
def test_map_params(name):
    tx, update = _plain(name)
    state = tx.init(PARAMS)
    _assert_map_params(tx, state)
    _, state = _apply(update, PARAMS, state, GRADS[0])
    _assert_map_params(tx, state)


@both_paths
def test_map_params_with_mask_and_other():
    mask = {
        "conv": {"kernel": True, "bias": False},
        "dense": {"kernel": False, "bias": False},
    }
    tx = layca_optax.layca(
        LR, base=optax.trace(0.9), mask=mask, other=optax.adam(1e-2)
    )
    state = tx.init(PARAMS)
    _assert_map_params(tx, state)
    new, state = _apply(jax.jit(tx.update), PARAMS, state, GRADS[0])
    _assert_map_params(tx, state)

    # The conv kernel is the only layer; the rest takes Adam's first step.
    rate = layca_optax.rotation_rate(new, PARAMS, mask=mask)
    assert len(jax.tree.leaves(rate)) == 1
    np.testing.assert_allclose(rate["conv"]["kernel"], LR, rtol=1e-5)
    for path in ("conv/bias", "dense/kernel", "dense/bias"):
        np.testing.assert_allclose(
            _kernel(new, path) - _kernel(PARAMS, path),
            -1e-2 * jnp.sign(_kernel(GRADS[0], path)),
            rtol=1e-4,
            atol=1e-7,
        )


# --- dtypes and state -------------------------------------------------------


@both_paths
@with_bases
@pytest.mark.slow  # 27 s on 2 cores: out of `make test-fast`
def test_bf16_params_and_grads(name):
    tx = layca_optax.layca(LR, base=BASES[name])
    to_bf16 = functools.partial(jax.tree.map, lambda x: x.astype(jnp.bfloat16))
    update = jax.jit(tx.update)
    params = to_bf16(PARAMS)
    # Small bfloat16 layers: their norms walk by a few % in 10,000 steps
    # under stochastic rounding (tests/core/test_low_precision.py).
    with pytest.warns(UserWarning, match="would drift"):
        state0 = state = tx.init(params)
    current = params
    for g in GRADS[:3]:
        old = current
        current, state = _apply(update, current, state, to_bf16(g))
        chex.assert_trees_all_equal_shapes_and_dtypes(current, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
        chex.assert_tree_all_finite(current)
        rates = _rates(current, old)
        for path in KERNELS:
            np.testing.assert_allclose(
                _norm(_kernel(current, path)),
                _norm(_kernel(params, path)),
                rtol=1e-2,
            )
            np.testing.assert_allclose(rates[path], LR, atol=1e-2)
    for layer in ("conv", "dense"):
        np.testing.assert_array_equal(
            current[layer]["bias"], params[layer]["bias"]
        )


@both_paths
@with_bases
def test_state_is_a_stable_pytree_of_arrays(name):
    tx, update = _plain(name)
    state0 = tx.init(PARAMS)
    leaves = jax.tree.leaves(state0)
    assert all(isinstance(x, jax.Array) for x in leaves), leaves
    mapped = jax.tree.map(lambda x: x + 0, state0)
    chex.assert_trees_all_equal_structs(mapped, state0)
    chex.assert_trees_all_equal(mapped, state0)

    current, state = PARAMS, state0
    for g in GRADS[:2]:
        current, state = _apply(update, current, state, g)
        chex.assert_trees_all_equal_structs(state, state0)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
        chex.assert_trees_all_equal_shapes_and_dtypes(current, PARAMS)
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    chex.assert_tree_all_finite(state)


# --- schedules --------------------------------------------------------------


@both_paths
def test_constant_schedule_equals_float():
    tx_float, update_float = _plain("adam")
    tx_sched = layca_optax.layca(
        optax.constant_schedule(LR), base=BASES["adam"]
    )
    update_sched = jax.jit(tx_sched.update)
    p_float = p_sched = PARAMS
    s_float, s_sched = tx_float.init(p_float), tx_sched.init(p_sched)
    for g in GRADS[:3]:
        p_float, s_float = _apply(update_float, p_float, s_float, g)
        p_sched, s_sched = _apply(update_sched, p_sched, s_sched, g)
    chex.assert_trees_all_equal(p_sched, p_float)


@both_paths
def test_piecewise_schedule_changes_the_angle():
    schedule = optax.piecewise_constant_schedule(LR, {2: 0.1})
    tx = layca_optax.layca(schedule, base=optax.trace(0.9))
    update = jax.jit(tx.update)
    current = PARAMS
    state = tx.init(current)
    for g, lr in zip(GRADS[:4], [LR, LR, LR * 0.1, LR * 0.1], strict=True):
        old = current
        current, state = _apply(update, current, state, g)
        _assert_layca_step(current, old, lr)


# --- convergence ------------------------------------------------------------


@both_paths
@pytest.mark.parametrize(
    ("name", "target_norm"),
    [(name, 1.0) for name in BASES] + [("sgd", 3.0)],
)
@pytest.mark.slow  # 8 s on 2 cores: out of `make test-fast`
def test_rotates_toward_the_target_direction(name, target_norm):
    """Minimizes ``|w - t|^2`` from a direction far from ``t``'s.

    On the sphere ``|w| = |w_0|`` the minimizer is ``t``'s direction. With
    ``|t| = |w_0|`` the gradient vanishes there, for every base. With another
    norm it is radial there: the tangent projection removes it from the plain
    gradient, but sign-like bases (Adam, Lion) then have other fixed points
    on the sphere, so only SGD gets that case.
    """
    rng = np.random.default_rng(2)
    w0, t = _normal(rng, (8, 4)), _normal(rng, (8, 4))
    t = t * (target_norm * jnp.linalg.norm(w0) / jnp.linalg.norm(t))

    def cosine(w):
        return jnp.vdot(w, t) / (jnp.linalg.norm(w) * jnp.linalg.norm(t))

    schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.98)
    tx = layca_optax.layca(schedule, base=BASES[name])

    @jax.jit
    def train(w):
        def body(carry, _):
            w, state = carry
            grads = {"w": w - t}
            updates, state = tx.update(grads, state, {"w": w})
            return (w + updates["w"], state), cosine(w)

        state = tx.init({"w": w})
        (w, _), cosines = jax.lax.scan(body, (w, state), length=300)
        return w, cosines

    assert cosine(w0) < 0.5
    final, cosines = train(w0)
    assert cosine(final) > 0.99, float(cosine(final))
    assert cosines[50] > cosines[0]
    # Near the end the gradient is almost radial (up to 1 / parallel_rtol =
    # 500 times its tangential part): the fused step's one-pass radial
    # cancellation then leaves about eta * 500 * 6e-8 of norm error per
    # step, a random walk of 1e-5 to 3e-5 over these 300 steps (seeds 0-7).
    np.testing.assert_allclose(_norm(final), _norm(w0), rtol=5e-5)


# --- wrappers ---------------------------------------------------------------


@both_paths
def test_chain_with_clip_by_global_norm():
    tx = optax.chain(optax.clip_by_global_norm(1.0), layca_optax.layca(LR))
    update = jax.jit(tx.update)
    current = PARAMS
    state = tx.init(current)
    for g in GRADS[:2]:
        assert optax.tree.norm(g) > 1.0  # the clipping is active
        old = current
        current, state = _apply(update, current, state, g)
        _assert_layca_step(current, old)


@both_paths
def test_apply_if_finite():
    tx = optax.apply_if_finite(
        layca_optax.layca(LR, base=optax.scale_by_adam()),
        max_consecutive_errors=2,
    )
    update = jax.jit(tx.update)
    state = tx.init(PARAMS)
    new, state = _apply(update, PARAMS, state, GRADS[0])
    _assert_layca_step(new, PARAMS)
    assert bool(state.last_finite)

    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), GRADS[1])
    newer, state = _apply(update, new, state, bad)
    chex.assert_trees_all_equal(newer, new)
    assert not bool(state.last_finite)
    assert int(state.notfinite_count) == 1

    newest, state = _apply(update, newer, state, GRADS[2])
    _assert_layca_step(newest, newer)
    assert int(state.notfinite_count) == 0
    assert int(state.total_notfinite) == 1
