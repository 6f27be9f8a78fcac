"""`layca` against the NumPy reference of SPEC.md section 1, and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax
from tests import reference


# The layca_path fixture (tests/conftest.py) runs a test with `layca`'s fused
# step, then with its chain of primitives: only tests that build a `layca`
# through `layca_optax.layca` take it.
both_paths = pytest.mark.usefixtures("layca_path")


BASES = {
    "sgd": None,
    "momentum": lambda: optax.trace(0.9),
    "nesterov": lambda: optax.trace(0.9, nesterov=True),
    "adam": optax.scale_by_adam,
    "rmsprop": optax.scale_by_rms,
    "adagrad": optax.scale_by_rss,
    "amom": lambda: optax.ema(0.9, debias=False),
    "lion": optax.scale_by_lion,
}

# Leaf order is alphabetical (Conv_10 < Conv_2 < Dense_0); forward is not.
SHAPES = {
    "Conv_2": (3, 3, 4, 8),
    "Conv_10": (3, 3, 8, 8),
    "Dense_0": (8, 10),
}
FORWARD = ["Conv_2/kernel", "Conv_10/kernel", "Dense_0/kernel"]


def make_base(name):
    factory = BASES[name]
    return None if factory is None else factory()


def init_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        name: {"kernel": rng.normal(size=shape).astype(dtype)}
        for name, shape in SHAPES.items()
    }
    params["Dense_0"]["bias"] = rng.normal(size=(10,)).astype(dtype)
    return params


def random_grads(steps, dtype, seed=1):
    """Fixed per-step gradients G_t; the total gradient is G_t + 0.3 w."""
    rng = np.random.default_rng(seed)
    return [
        {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
        for _ in range(steps)
    ]


def kernels(params):
    return {k: np.asarray(v["kernel"], np.float64) for k, v in params.items()}


def run_jax(tx, params, gs, dtype):
    @jax.jit
    def step(params, state, g):
        grads = jax.tree.map(lambda p: 0.3 * p, params)
        for k in g:
            grads[k]["kernel"] = grads[k]["kernel"] + g[k]
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    state = tx.init(params)
    history = []
    for g in gs:
        params, state = step(params, state, g)
        history.append(params)
    return history


def assert_close(actual, desired, rtol):
    """Elementwise, with the tolerance relative to the layer's scale."""
    np.testing.assert_allclose(
        actual, desired, rtol=rtol, atol=rtol * np.abs(desired).max()
    )


@both_paths
@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", ["alpha_schedule", "plain"])
def test_matches_reference(base, dtype, config):
    steps = 6
    if config == "alpha_schedule":
        alpha, order = 0.4, FORWARD
        # A step-decay schedule. Written out (not optax.exponential_decay,
        # which computes in float32 even with x64 on) for the 1e-12 check.
        lr = lambda count: 0.2 * 0.5 ** (count // 2)
        lr_fn = lr
    else:
        alpha, order, lr = 0.0, None, 3**-3
        lr_fn = lambda t: 3**-3
    mults = dict(
        zip(
            [p.split("/")[0] for p in FORWARD],
            reference.depth_multipliers(alpha, 3),
            strict=True,
        )
    )
    rtol = 1e-5 if dtype == "float32" else 1e-12
    with jax.enable_x64(dtype == "float64"):
        params = init_params(dtype)
        gs = random_grads(steps, dtype)
        tx = layca_optax.layca(
            lr, make_base(base), alpha=alpha, layer_order=order
        )
        got = run_jax(tx, params, gs, dtype)
    want = reference.run_layca(
        kernels(params),
        lambda t, p: {k: gs[t][k] + 0.3 * p[k] for k in p},
        steps,
        lr_fn,
        {"sgd": "sgd"}.get(base, base),
        mults,
    )
    for t in range(steps):
        for name in SHAPES:
            assert got[t][name]["kernel"].dtype == jnp.dtype(dtype)
            assert_close(
                np.asarray(got[t][name]["kernel"], np.float64),
                want[t][name],
                rtol,
            )
        # Not a layer: unchanged, bit for bit (the authors' default).
        np.testing.assert_array_equal(
            got[t]["Dense_0"]["bias"], params["Dense_0"]["bias"]
        )


def angle_tan(new, old):
    new, old = np.ravel(new).astype(np.float64), np.ravel(old).astype(float)
    cos = np.vdot(new, old) / (np.linalg.norm(new) * np.linalg.norm(old))
    return np.tan(np.arccos(np.clip(cos, -1, 1)))


@both_paths
@pytest.mark.parametrize("base", ["sgd", "momentum", "adam", "lion"])
def test_each_step_turns_by_arctan_lr_and_keeps_norm(base):
    steps, lr = 20, 0.05
    mults = reference.depth_multipliers(-0.3, 3)
    tx = layca_optax.layca(lr, make_base(base), alpha=-0.3, layer_order=FORWARD)
    params = init_params("float32")
    history = [params] + run_jax(
        tx, params, random_grads(steps, "float32"), "float32"
    )
    for t in range(steps):
        for name, m in zip(
            [p.split("/")[0] for p in FORWARD], mults, strict=True
        ):
            old = np.asarray(history[t][name]["kernel"], np.float64)
            new = np.asarray(history[t + 1][name]["kernel"], np.float64)
            np.testing.assert_allclose(angle_tan(new, old), lr * m, rtol=1e-4)
            np.testing.assert_allclose(
                np.linalg.norm(new), np.linalg.norm(old), rtol=1e-5
            )


@pytest.mark.slow  # 10,000 steps: about 24 s per path
@both_paths
def test_norm_drift_after_10000_float32_steps(key):
    shapes = {"a": (64, 64), "b": (3, 3, 16, 32), "c": (128, 10)}
    keys = jax.random.split(key, len(shapes))
    params = {
        k: jax.random.normal(kk, s)
        for kk, (k, s) in zip(keys, shapes.items(), strict=True)
    }
    tx = layca_optax.layca(3**-3, optax.trace(0.9))

    @jax.jit
    def run(params):
        def body(carry, t):
            p, s = carry
            ks = jax.random.split(jax.random.fold_in(key, t), len(shapes))
            g = {
                k: jax.random.normal(kk, v.shape)
                for kk, (k, v) in zip(ks, p.items(), strict=True)
            }
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(
            body, (params, tx.init(params)), jnp.arange(10_000)
        )
        return p

    final = run(params)
    for k in shapes:
        n0 = np.linalg.norm(np.asarray(params[k], np.float64))
        n1 = np.linalg.norm(np.asarray(final[k], np.float64))
        # 1e-6 measured on both paths (the chain drifted by 1e-4 while its
        # reprojection divided two separately rounded norms).
        assert abs(n1 / n0 - 1) < 1e-5, (k, n1 / n0 - 1)
        # The layer really moved: it is far from its initialization.
        assert float(layca_optax.layer_rotation(final[k], params[k])) > 0.5


def one_step(tx, params, grads):
    @jax.jit
    def step(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates

    return step(params, grads)


@both_paths
def test_zero_step_threshold_is_on_the_lr_scaled_step():
    # ||g_perp|| = 1: the reference skips the step iff lr * 1 <= 1e-7.
    w = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    g = jnp.array([[0.0, 1.0], [0.0, 0.0]])
    below = one_step(layca_optax.layca(0.9e-7), w, g)
    np.testing.assert_array_equal(below, 0.0)
    above = one_step(layca_optax.layca(2e-7), w, g)
    np.testing.assert_allclose(above[0, 1], -2e-7, rtol=1e-3)
    # The same with a layer multiplier: the threshold sees lr * multiplier.
    tx = layca_optax.layca(1e-6, multipliers=0.05)
    np.testing.assert_array_equal(one_step(tx, w, g), 0.0)


@both_paths
@pytest.mark.parametrize("base", sorted(BASES))
def test_degenerate_layers_get_no_update(base):
    # Entries of equal magnitude, so that the elementwise-adaptive bases
    # (Adam, RMSprop, Adagrad, Lion) also give a step parallel to w.
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(4, 5))
    w = (0.7 * signs).astype(np.float32)
    params = {"zero_w": jnp.zeros((4, 5)), "zero_g": w, "parallel": w}
    grads = {"zero_w": jnp.ones((4, 5)), "zero_g": jnp.zeros((4, 5))}
    grads["parallel"] = -3.7 * w
    tx = layca_optax.layca(0.1, make_base(base))
    updates = one_step(tx, params, grads)
    for name in params:
        np.testing.assert_array_equal(updates[name], 0.0, err_msg=name)


@both_paths
@pytest.mark.parametrize(
    "base",
    # optax's Adam needs eps_root > 0 to be differentiable at g = 0.
    [None, optax.trace(0.9), optax.scale_by_adam(eps_root=1e-8)],
)
@pytest.mark.slow  # 19 s on 2 cores: out of `make test-fast`
def test_gradient_of_the_update_is_finite_at_degenerate_points(base):
    w = jnp.arange(6.0).reshape(2, 3)
    tx = layca_optax.layca(0.1, base)

    def total(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return sum(jnp.sum(u**2) for u in jax.tree.leaves(updates))

    cases = {
        "zero_w": (jnp.zeros((2, 3)), jnp.ones((2, 3))),
        "zero_g": (w, jnp.zeros((2, 3))),
        "parallel": (w, 2.0 * w),
        "generic": (w, jnp.ones((2, 3))),
    }
    for name, (p, g) in cases.items():
        dp, dg = jax.jit(jax.grad(total, argnums=(0, 1)))(p, g)
        assert np.isfinite(dp).all() and np.isfinite(dg).all(), name


def per_slice_reference(p, step, lr, axes):
    """The reference applied to each slice that `axes` reduces over."""
    keep = [a for a in range(p.ndim) if a not in axes]
    pm = np.moveaxis(p, keep, range(len(keep)))
    sm = np.moveaxis(step, keep, range(len(keep)))
    out = np.empty_like(pm)
    for idx in np.ndindex(*pm.shape[: len(keep)]):
        out[idx] = reference.layca_step(pm[idx], sm[idx], lr)
    return np.moveaxis(out, range(len(keep)), keep)


@both_paths
@pytest.mark.parametrize(
    "shape,axis,axes",
    [
        ((6, 5), 0, (0,)),  # one norm per output unit (Nero)
        ((6, 5), -1, (1,)),
        ((4, 6, 5), (1, 2), (1, 2)),  # stacked (scanned) layers
        ((3, 3, 4, 5), layca_optax.fan_in_axes, (0, 1, 2)),
        ((6, 5), None, (0, 1)),
    ],
)
def test_axis_gives_per_slice_layca(shape, axis, axes):
    rng = np.random.default_rng(3)
    p = rng.normal(size=shape)
    g = rng.normal(size=shape)
    with jax.enable_x64(True):
        tx = layca_optax.layca(0.1, axis=axis)
        u = one_step(tx, jnp.asarray(p), jnp.asarray(g))
    want = per_slice_reference(p, 0.1 * g, 0.1, axes)
    np.testing.assert_allclose(p + np.asarray(u), want, rtol=1e-12, atol=1e-12)


@both_paths
def test_mask_and_other():
    params = init_params("float32")
    grads = jax.tree.map(jnp.ones_like, params)
    # Only Dense_0 is a layer; the rest is trained by SGD.
    mask = {
        "Conv_2": False,
        "Conv_10": False,
        "Dense_0": {"kernel": True, "bias": False},
    }
    tx = layca_optax.layca(0.1, mask=mask, other=optax.sgd(0.5))
    updates = one_step(tx, params, grads)
    np.testing.assert_allclose(updates["Conv_2"]["kernel"], -0.5)
    np.testing.assert_allclose(updates["Dense_0"]["bias"], -0.5)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(
        angle_tan(new["Dense_0"]["kernel"], params["Dense_0"]["kernel"]),
        0.1,
        rtol=1e-4,
    )
    # A callable mask selecting by path, and a prefix-tree mask.
    by_path = lambda p: jax.tree_util.tree_map_with_path(
        lambda path, _: "Conv" in layca_optax.path_str(path), p
    )
    prefix = {"Conv_2": True, "Conv_10": True, "Dense_0": False}
    for m in (by_path, prefix):
        u = one_step(layca_optax.layca(0.1, mask=m), params, grads)
        np.testing.assert_array_equal(u["Dense_0"]["kernel"], 0.0)
        assert np.abs(np.asarray(u["Conv_2"]["kernel"])).max() > 0


@both_paths
def test_multipliers_tree_and_callable():
    params = init_params("float32")
    grads = random_grads(1, "float32")[0]
    grads = {k: {"kernel": v} for k, v in grads.items()}
    grads["Dense_0"]["bias"] = np.ones(10, np.float32)
    tree = {
        "Conv_2": 0.5,
        "Conv_10": 0.25,
        "Dense_0": {"kernel": 1.0, "bias": 9.0},
    }
    fn = lambda layers: jax.tree.map(
        lambda x: 0.5 if x.ndim == 4 else 1.0, layers
    )
    for mults, want in ((tree, [0.5, 0.25, 1.0]), (fn, [0.5, 0.5, 1.0])):
        tx = layca_optax.layca(0.1, multipliers=mults)
        new = optax.apply_updates(params, one_step(tx, params, grads))
        for name, m in zip(["Conv_2", "Conv_10", "Dense_0"], want, strict=True):
            np.testing.assert_allclose(
                angle_tan(new[name]["kernel"], params[name]["kernel"]),
                0.1 * m,
                rtol=1e-4,
            )


@pytest.mark.parametrize(
    "alpha,first,middle,last",
    [
        (-0.6, 1.0, 0.101, 0.0102),
        (0.6, 0.0102, 0.101, 1.0),
        (0.8, 3.2e-4, 0.018, 1.0),
        (0.0, 1.0, 1.0, 1.0),
    ],
)
def test_depth_multipliers_match_the_paper_table(alpha, first, middle, last):
    m = layca_optax.depth_multipliers(alpha, 25)
    assert len(m) == 25
    np.testing.assert_allclose(
        [m[0], m[12], m[-1]], [first, middle, last], rtol=0.03
    )
    np.testing.assert_allclose(
        m, reference.depth_multipliers(alpha, 25), rtol=1e-12
    )
    assert layca_optax.depth_multipliers(alpha, 1) == [1.0]


@both_paths
def test_leaf_order_is_not_forward_order():
    params = init_params("float32")
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [layca_optax.path_str(p) for p, _ in leaves]
    assert paths.index("Conv_10/kernel") < paths.index("Conv_2/kernel")
    grads = {k: {"kernel": v} for k, v in random_grads(1, "float32")[0].items()}
    grads["Dense_0"]["bias"] = np.ones(10, np.float32)
    fwd = layca_optax.layca(0.1, alpha=0.6, layer_order=FORWARD)
    alpha_order = layca_optax.layca(0.1, alpha=0.6, layer_order="leaves")
    m = layca_optax.depth_multipliers(0.6, 3)
    for tx, want in ((fwd, m), (alpha_order, [m[1], m[0], m[2]])):
        new = optax.apply_updates(params, one_step(tx, params, grads))
        got = [
            angle_tan(new[n]["kernel"], params[n]["kernel"])
            for n in ["Conv_2", "Conv_10", "Dense_0"]
        ]
        np.testing.assert_allclose(got, 0.1 * np.array(want), rtol=1e-3)


@pytest.mark.parametrize("base", ["sgd", "momentum", "adam", "lion"])
@pytest.mark.parametrize("axis", [None, layca_optax.fan_in_axes])
def test_fused_step_matches_the_primitive_chain(base, axis):
    """`layca`'s fused kernel against its chain of primitives, to 1e-6.

    Layers and per-unit slices of realistic size (>= 36 weights). On slices
    of a few weights the fused one-pass tangential norm loses accuracy when
    the direction is nearly parallel (see `scale_by_layca`).
    """
    params = init_params("float32")
    gs = random_grads(4, "float32")
    orig = getattr(layca_optax.layca, "func", layca_optax.layca)
    runs = [
        run_jax(
            orig(
                0.1,
                make_base(base),
                alpha=0.3,
                layer_order=FORWARD,
                axis=axis,
                fused=fused,
            ),
            params,
            gs,
            "float32",
        )
        for fused in (True, False)
    ]
    for fused_p, chain_p in zip(*runs, strict=True):
        for name in SHAPES:
            a = np.asarray(fused_p[name]["kernel"], np.float64)
            b = np.asarray(chain_p[name]["kernel"], np.float64)
            assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(b)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    ("w_scale", "g_scale"), [(1e-6, 1e13), (1e-15, 1e4), (1e-12, 1e7)]
)
def test_tiny_layer_huge_direction_in_float32(w_scale, g_scale, fused):
    """Within the documented range, though ||w||^2 / ||d_perp||^2 is below
    float32's smallest normal number (the step once lost 3% of the norm:
    found by tests/core/test_fuzz.py)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 2, 3, 2)) * w_scale
    g = rng.normal(size=(2, 2, 3, 2)) * g_scale
    tx = layca_optax.layca(0.25, fused=fused)
    params, grads = {"w": jnp.asarray(w, jnp.float32)}, {"w": jnp.asarray(g)}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = np.asarray(optax.apply_updates(params, updates)["w"], np.float64)
    old = np.asarray(params["w"], np.float64)
    np.testing.assert_allclose(
        np.linalg.norm(new), np.linalg.norm(old), rtol=1e-6
    )
    cos = np.vdot(new, old) / np.linalg.norm(new) / np.linalg.norm(old)
    np.testing.assert_allclose(np.tan(np.arccos(cos)), 0.25, rtol=1e-4)
