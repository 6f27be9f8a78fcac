"""A fixed radius per layer (issue 26 part 2): ``reproject_to_sphere``,
``hyperball`` and ``layca`` (fused and chain) with ``radius=``, against
NumPy references in float64 under ``jit``, with ``axis``; the norm lands
on the radius, the turn does not depend on it; zero layers, bfloat16,
``inject_hyperparams``, the GPU program's forms, the cost in bytes, and
bad values."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from layca_optax import _sums as sm


pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(would drift|stay frozen|are zero).*:UserWarning"
)

SHAPES = {"a": (3, 4, 5), "b": (6, 4)}
AXIS = {"a": (1, 2), "b": None}  # "a": 3 stacked layers; "b": one layer
ALL = {"a": (1, 2), "b": (0, 1)}  # the same axes, for NumPy


def _tree(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: scale * rng.normal(size=s) for k, s in SHAPES.items()}


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _norm(x, axes):
    return np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True))


def _cos(a, b, axes):
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    return np.sum(a * b, axis=axes) / (
        _norm(a, axes).squeeze(axes) * _norm(b, axes).squeeze(axes)
    )


def _np_radius(r, k):
    """The NumPy radius of leaf ``k`` (keepdims shape) for a radius value."""
    r = r[k] if isinstance(r, dict) else r
    r = np.asarray(r, np.float64)
    return r.reshape(-1, 1, 1) if r.ndim else r


def _np_layca(w, d, lr, R, axes):
    """Layca's step with a fixed radius, in float64: the tangent part of
    ``d`` scaled to ``||w||``, the step, then onto the radius ``R``."""
    k = np.sum(d * w, axis=axes, keepdims=True) / _norm(w, axes) ** 2
    perp = d - k * w
    s = perp * _norm(w, axes) / _norm(perp, axes)
    new = w - lr * s
    return R * new / _norm(new, axes)


def _np_hyperball(w, d, lr, R, axes):
    s = d * _norm(w, axes) / _norm(d, axes)
    new = w - lr * s
    return R * new / _norm(new, axes)


def _np_reproject(w, u, R, axes):
    return R * (w + u) / _norm(w + u, axes)


RADII = {
    "float": 2.5,
    "tree": {"a": np.array([0.5, 2.0, 7.0]), "b": 3.0},
    "tree_keepdims": {
        "a": np.array([0.5, 2.0, 7.0]).reshape(3, 1, 1),
        "b": 3.0,
    },
    "callable": lambda p: {
        "a": 2 * jnp.linalg.norm(p["a"], axis=(1, 2)),
        "b": 0.25 * jnp.linalg.norm(p["b"]),
    },
}


def _radius_value(name, w):
    r = RADII[name]
    if callable(r):
        r = jax.tree.map(np.asarray, r(_f32(w)))
    return r


def _make(kind, lr, radius, axis=AXIS):
    if kind == "reproject":
        return layca_optax.reproject_to_sphere(axis=axis, radius=radius)
    if kind == "hyperball":
        return layca_optax.hyperball(lr, axis=axis, radius=radius)
    return layca_optax.layca(
        lr, axis=axis, radius=radius, fused=kind == "layca"
    )


REFS = {
    "reproject": lambda w, d, lr, R, axes: _np_reproject(w, d, R, axes),
    "hyperball": _np_hyperball,
    "layca": _np_layca,
    "layca_chain": _np_layca,
}


@pytest.mark.parametrize("radius", list(RADII))
@pytest.mark.parametrize("kind", list(REFS))
@pytest.mark.slow  # 12 s on 2 cores: out of `make test-fast`
def test_against_numpy_under_jit(kind, radius):
    w, g = _tree(0), _tree(1)
    w["a"][1] *= 10.0  # a slice far off its radius
    lr = 0.2
    tx = _make(kind, lr, RADII[radius])
    state = jax.jit(tx.init)(_f32(w))
    update = jax.jit(tx.update)
    r = _radius_value(radius, w)
    for step in range(3):
        u, state = update(_f32(g), state, _f32(w))
        new = jax.tree.map(np.asarray, optax.apply_updates(_f32(w), u))
        for k in SHAPES:
            R = _np_radius(r, k)
            want = REFS[kind](w[k], g[k], lr, R, ALL[k])
            np.testing.assert_allclose(new[k], want, rtol=2e-5, atol=2e-5)
            # Every layer on its radius, to float32 rounding.
            np.testing.assert_allclose(
                _norm(new[k], ALL[k]),
                np.broadcast_to(R, _norm(new[k], ALL[k]).shape),
                rtol=1e-6,
            )
        w = jax.tree.map(lambda x: np.asarray(x, np.float64), new)
        g = _tree(2 + step)


@pytest.mark.parametrize("fused", [True, False])
def test_layca_turns_by_arctan_lr_on_and_off_the_radius(fused):
    # The step is sized by the current norm: the turn is arctan(lr) whether
    # the layer is on its radius, far inside it or far outside it.
    w = {"a": np.stack([np.ones((4, 5)) * s for s in (0.01, 1.0, 100.0)])}
    w["a"] = w["a"] + np.random.default_rng(3).normal(size=(3, 4, 5)) * w["a"]
    g = {"a": np.random.default_rng(4).normal(size=(3, 4, 5))}
    radius = {"a": np.array([5.0, 5.0, 5.0])}
    tx = layca_optax.layca(0.3, axis=(1, 2), radius=radius, fused=fused)
    u, _ = jax.jit(tx.update)(_f32(g), tx.init(_f32(w)), _f32(w))
    new = optax.apply_updates(_f32(w), u)
    turn = np.arccos(np.clip(_cos(new["a"], w["a"], (1, 2)), -1, 1))
    np.testing.assert_allclose(turn, np.arctan(0.3), rtol=1e-5)
    # On the radius to the rounding of w + u (optax.apply_updates adds the
    # update: a layer shrunk from norm 600 to 5 keeps its absolute error).
    before = np.linalg.norm(w["a"], axis=(1, 2))
    np.testing.assert_array_less(
        np.abs(np.linalg.norm(np.asarray(new["a"]), axis=(1, 2)) - 5.0),
        4 * np.finfo(np.float32).eps * np.maximum(before, 5.0),
    )


def test_hyperball_turn_off_the_radius_does_not_depend_on_it():
    # atan2(lr sin(phi), 1 - lr cos(phi)), phi = angle(w, d), for any R.
    w = {"k": np.array([[3.0, 0.0]])}
    d = {"k": np.array([[-1.0, 1.0]])}  # phi = 135 degrees
    lr = 0.4
    for R in (0.1, 3.0, 1e3):
        tx = layca_optax.hyperball(lr, radius=R, other=optax.sgd(0.1))
        u, _ = tx.update(_f32(d), tx.init(_f32(w)), _f32(w))
        new = np.asarray(optax.apply_updates(_f32(w), u)["k"], np.float64)
        phi = np.arccos(_cos(w["k"], d["k"], (0, 1)))
        want = np.arctan2(lr * np.sin(phi), 1 - lr * np.cos(phi))
        got = np.arccos(np.clip(_cos(new, w["k"], (0, 1)), -1, 1))
        np.testing.assert_allclose(got, want, rtol=1e-5)
        # To the rounding of w + u in float32 (optax.apply_updates).
        eps = np.finfo(np.float32).eps
        assert abs(np.linalg.norm(new) - R) <= 4 * eps * max(3.0, R)


@pytest.mark.parametrize("kind", list(REFS))
def test_no_step_still_lands_on_the_radius(kind):
    # A zero gradient: no turn, the layer is only scaled onto its radius.
    w = _tree(5)
    tx = _make(kind, 0.1, 2.0)
    zeros = jax.tree.map(np.zeros_like, w)
    u, _ = tx.update(_f32(zeros), tx.init(_f32(w)), _f32(w))
    new = optax.apply_updates(_f32(w), u)
    for k in SHAPES:
        want = 2.0 * w[k] / _norm(w[k], ALL[k])
        np.testing.assert_allclose(new[k], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", list(REFS))
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_a_zero_layer_stays_zero(kind):
    w = {"a": np.zeros((3, 4, 5)), "b": _tree(6)["b"]}
    w["a"][1] = 1.0  # one nonzero slice among zero ones
    tx = _make(kind, 0.1, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = tx.init(_f32(w))
    u, _ = jax.jit(tx.update)(_f32(_tree(7)), state, _f32(w))
    new = optax.apply_updates(_f32(w), u)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    np.testing.assert_array_equal(new["a"][0], 0.0)
    np.testing.assert_array_equal(new["a"][2], 0.0)
    np.testing.assert_allclose(np.linalg.norm(new["a"][1]), 2.0, rtol=1e-6)


def test_layca_still_warns_about_zero_layers_with_a_radius():
    tx = layca_optax.layca(0.1, radius=1.0)
    with pytest.warns(UserWarning, match="these layers are zero"):
        tx.init({"kernel": jnp.zeros((2, 3))})


@pytest.mark.parametrize("kind", list(REFS))
@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_bfloat16_layers_land_on_the_radius(kind):
    rng = np.random.default_rng(8)
    w = {"k": jnp.asarray(rng.normal(size=(64, 32)) * 0.05, jnp.bfloat16)}
    tx = _make(kind, 0.1, 3.0, axis=None)
    state = tx.init(w)
    update = jax.jit(tx.update)
    for _ in range(20):
        g = {"k": jnp.asarray(rng.normal(size=(64, 32)), jnp.bfloat16)}
        u, state = update(g, state, w)
        assert u["k"].dtype == jnp.bfloat16
        w = optax.apply_updates(w, u)
    norm = float(jnp.linalg.norm(w["k"].astype(jnp.float32)))
    # bfloat16 keeps 8 bits: the norm is within a few 2^-9 / sqrt(n).
    assert abs(norm / 3.0 - 1) < 3e-3, norm


def test_norm_stays_on_the_radius_over_many_float32_steps():
    tx = layca_optax.layca(0.1, base=optax.scale_by_adam(), radius=1.5)
    w = _f32({"k": _tree(9)["b"]})
    state = tx.init(w)

    @jax.jit
    def run(w, state):
        def body(i, carry):
            w, state = carry
            g = jax.tree.map(
                lambda x: jax.random.normal(jax.random.key(i), x.shape), w
            )
            u, state = tx.update(g, state, w)
            return optax.apply_updates(w, u), state

        return jax.lax.fori_loop(0, 2000, body, (w, state))

    w, _ = run(w, state)
    np.testing.assert_allclose(float(jnp.linalg.norm(w["k"])), 1.5, rtol=1e-6)


def test_callable_radius_is_evaluated_at_init_and_kept_in_the_state():
    w = _f32(_tree(10))
    calls = []

    def radius(p):
        calls.append(1)
        return jax.tree.map(lambda x: 2 * jnp.linalg.norm(x), p)

    tx = layca_optax.layca(0.1, radius=radius)
    state = tx.init(w)
    stored = optax.tree.get(state, "radius")
    np.testing.assert_allclose(
        stored["b"], 2 * np.linalg.norm(np.asarray(w["b"])), rtol=1e-6
    )
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    # A resumed run keeps the stored radii, whatever the params now are.
    later = jax.tree.map(lambda x: 10 * x, w)
    u, state = jax.jit(tx.update)(_f32(_tree(11)), state, later)
    new = optax.apply_updates(later, u)
    np.testing.assert_allclose(
        float(jnp.linalg.norm(new["b"])), float(stored["b"]), rtol=1e-6
    )
    assert len(calls) == 1


def test_a_traced_callable_radius_that_is_not_positive_gives_nan():
    # Under jit(init) the values cannot be checked: NaN updates, not silence.
    tx = layca_optax.reproject_to_sphere(
        radius=lambda p: jax.tree.map(lambda x: -jnp.linalg.norm(x), p)
    )
    w = _f32(_tree(12))
    state = jax.jit(tx.init)(w)
    u, _ = jax.jit(tx.update)(w, state, w)
    assert all(bool(jnp.all(jnp.isnan(x))) for x in jax.tree.leaves(u))


def test_inject_hyperparams_radius():
    w = _f32({"k": _tree(13)["b"]})
    g = _f32({"k": _tree(14)["b"]})
    tx = optax.inject_hyperparams(layca_optax.layca)(0.1, radius=2.0)
    state = tx.init(w)
    u, state = jax.jit(tx.update)(g, state, w)
    new = optax.apply_updates(w, u)
    np.testing.assert_allclose(jnp.linalg.norm(new["k"]), 2.0, rtol=1e-6)
    state.hyperparams["radius"] = jnp.asarray(0.5)  # a new value applies
    u, state = jax.jit(tx.update)(g, state, new)
    new = optax.apply_updates(new, u)
    np.testing.assert_allclose(jnp.linalg.norm(new["k"]), 0.5, rtol=1e-6)
    # A traced non-positive radius gives NaN.
    state.hyperparams["radius"] = jnp.asarray(-1.0)
    u, _ = jax.jit(tx.update)(g, state, new)
    assert bool(jnp.all(jnp.isnan(u["k"])))
    # A callable radius must be static.
    norms = lambda p: jax.tree.map(jnp.linalg.norm, p)  # noqa: E731
    for make in (layca_optax.layca, layca_optax.hyperball):
        tx = optax.inject_hyperparams(make)(0.1, radius=norms)
        with pytest.raises(ValueError, match=r"static_args=\('radius',\)"):
            tx.init(w)
        tx = optax.inject_hyperparams(make, static_args=("radius",))(
            0.1, radius=norms
        )
        u, _ = jax.jit(tx.update)(g, tx.init(w), w)
        new = optax.apply_updates(w, u)
        np.testing.assert_allclose(
            jnp.linalg.norm(new["k"]), jnp.linalg.norm(w["k"]), rtol=1e-6
        )


def _fresh_jit(fn):
    return jax.jit(lambda *args: fn(*args))


@pytest.mark.parametrize("radius", ["float", "callable"])
def test_staged_gpu_forms_equal_per_leaf(radius):
    rng = np.random.default_rng(15)
    w = _f32({f"k{i}": rng.normal(size=(8, 6)) for i in range(4)})
    g = _f32({f"k{i}": rng.normal(size=(8, 6)) for i in range(4)})
    r = (
        2.0
        if radius == "float"
        else lambda p: jax.tree.map(lambda x: 3 * jnp.linalg.norm(x), p)
    )
    tx = layca_optax.layca(0.2, radius=r)
    out = []
    for on in (False, True):
        with sm.gpu_forms(on):
            out.append(_fresh_jit(tx.update)(g, tx.init(w), w)[0])
    for a, b in zip(*map(jax.tree.leaves, out), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_radius_adds_no_array_to_the_step(fused):
    # XLA's cost analysis: the bytes a step reads and writes, with and
    # without a radius, differ by a few per-layer scalars (an array of
    # the smaller layer is 32 kB).
    w = _f32({"a": np.ones((64, 128)), "b": np.ones((96, 96))})

    def traffic(radius):
        tx = layca_optax.layca(0.1, radius=radius, fused=fused)
        lowered = jax.jit(tx.update).lower(w, tx.init(w), w)
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["bytes accessed"]

    base = traffic(None)
    for radius in (2.0, lambda p: jax.tree.map(lambda _: 1.0, p)):
        assert 0 <= traffic(radius) - base < 512, (traffic(radius), base)


def test_each_argument_is_checked_once(monkeypatch):
    from layca_optax import _radius

    counts = []
    original = _radius.check_radius
    monkeypatch.setattr(
        _radius,
        "check_radius",
        lambda r: (counts.append(r), original(r))[1],
    )
    for fused in (True, False):
        counts.clear()
        layca_optax.layca(0.1, radius=2.0, fused=fused)
        assert counts == [2.0]
    counts.clear()
    layca_optax.hyperball(0.1, radius=2.0)
    assert counts == [2.0]


BAD = {
    "negative": -1.0,
    "zero": 0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "bool": True,
    "string": "2",
    "complex": 1j,
    "array_with_zero": np.array([1.0, 0.0, 2.0]),
    "empty_tree": {},
}
BAD_AT_INIT = {
    "wrong_structure": {"a": 1.0, "c": 2.0},
    "wrong_shape": {"a": np.ones(4), "b": 1.0},
    "array_for_a_whole_leaf": {"a": 1.0, "b": np.ones(6)},
    "callable_string": lambda p: "big",
    "callable_negative": lambda p: jax.tree.map(lambda _: -1.0, p),
    "callable_none": lambda p: None,
    "callable_structure": lambda p: {"x": 1.0},
    "callable_raises": lambda p: 1 / 0,
    "callable_shape": lambda p: jax.tree.map(jnp.zeros_like, p),
}
FUNCTIONS = {
    "reproject_to_sphere": lambda r: layca_optax.reproject_to_sphere(
        axis=AXIS, radius=r
    ),
    "hyperball": lambda r: layca_optax.hyperball(0.1, axis=AXIS, radius=r),
    "layca": lambda r: layca_optax.layca(0.1, axis=AXIS, radius=r),
    "scale_by_layca": lambda r: layca_optax.scale_by_layca(
        0.1, axis=AXIS, radius=r
    ),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("bad", list(BAD) + list(BAD_AT_INIT))
def test_bad_radius_names_the_function_and_argument(name, bad):
    value = {**BAD, **BAD_AT_INIT}[bad]
    with pytest.raises(ValueError, match=rf"^`{name}\(radius=\.\.\.\)`"):
        FUNCTIONS[name](value).init(_f32(_tree(18)))
    if bad in BAD:  # refused when built, before init
        with pytest.raises(ValueError, match=rf"^`{name}\(radius=\.\.\.\)`"):
            FUNCTIONS[name](value)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_callable_radii_survive_an_orbax_checkpoint(fused, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    w = _f32(_tree(19))
    tx = layca_optax.layca(
        0.1,
        base=optax.scale_by_adam(),
        radius=lambda p: jax.tree.map(lambda x: 3 * jnp.linalg.norm(x), p),
        fused=fused,
    )
    state = tx.init(w)
    update = jax.jit(tx.update)
    u, state = update(_f32(_tree(20)), state, w)
    w = optax.apply_updates(w, u)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"w": w, "state": state})
    checkpointer.wait_until_finished()
    # A fresh optimizer's init (other radii) as the target: the restored
    # radii are the first run's.
    fresh = tx.init(jax.tree.map(lambda x: 0.5 * x, w))
    restored = checkpointer.restore(tmp_path / "ckpt", {"w": w, "state": fresh})
    g = _f32(_tree(21))
    a, _ = update(g, state, w)
    b, _ = update(g, restored["state"], restored["w"])
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
