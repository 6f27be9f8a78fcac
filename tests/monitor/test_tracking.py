"""track_rotation and tracked_metrics: in-step layer-rotation monitoring."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial import distance

import layca_optax


LAYERS = ["Conv_0/kernel", "Dense_0/kernel", "blocks/0", "blocks/1"]


def random_tree(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {
        "Conv_0": {
            "kernel": rng.normal(size=(3, 3, 2, 4)).astype(dtype),
            "bias": rng.normal(size=(4,)).astype(dtype),
        },
        "Dense_0": {"kernel": rng.normal(size=(6, 3)).astype(dtype)},
        "blocks": [rng.normal(size=(4, 4)).astype(dtype) for _ in range(2)],
    }


def by_path(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {layca_optax.path_str(p): np.asarray(v) for p, v in flat}


def run(tx, params, steps, seed=1):
    """`steps` jitted steps on random gradients: [(params, state)], step."""
    rng = np.random.default_rng(seed)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, params)
    history = [(params, tx.init(params))]
    for _ in range(steps):
        grads = jax.tree.map(
            lambda x: rng.normal(size=x.shape).astype(x.dtype), params
        )
        history.append(step(*history[-1], grads))
    return history, step


def test_agrees_with_rotation_metrics_scipy_and_numpy_in_float64():
    init = random_tree(0, np.float64)
    track = layca_optax.track_rotation(reference="exact")
    tx = optax.chain(optax.sgd(0.3), track)
    with jax.enable_x64(True):
        history, _ = run(tx, init, steps=3)
        (old, _), (new, state) = history[-2:]
        got = jax.jit(layca_optax.tracked_metrics)(state)
        rot = jax.jit(layca_optax.rotation_metrics)(new, init)
    assert int(optax.tree.get(state, "count")) == 3
    assert len(got) == 4 * len(LAYERS)
    new, old, init = by_path(new), by_path(old), by_path(init)
    for layer in LAYERS:
        w1, w, w0 = new[layer].ravel(), old[layer].ravel(), init[layer].ravel()
        cos = distance.cosine(w1, w0)
        for value in (got[f"track/cosine/{layer}"], rot[f"rotation/{layer}"]):
            assert value.dtype == jnp.float64
            np.testing.assert_allclose(value, cos, rtol=1e-6)
        u = w1 - w
        radial = u @ w / np.linalg.norm(w)
        tangential = np.linalg.norm(u - radial * w / np.linalg.norm(w))
        want = {
            "rate": tangential / (np.linalg.norm(w) + radial),
            "radial_ratio": abs(radial) / tangential,
            "norm": np.linalg.norm(w1),
        }
        for name, value in want.items():
            key = f"track/{name}/{layer}"
            np.testing.assert_allclose(got[key], value, rtol=1e-9)


def test_layca_reads_learning_rate_times_multiplier_every_step():
    lr, alpha = 0.1, 0.5
    order = ["Conv_0/kernel", "blocks/1", "blocks/0", "Dense_0/kernel"]
    multipliers = layca_optax.depth_multipliers(alpha, 4)
    multipliers = dict(zip(order, multipliers, strict=True))
    layca = layca_optax.layca(lr, alpha=alpha, layer_order=order)
    init = random_tree(0)
    history, step = run(
        optax.chain(layca, layca_optax.track_rotation()), init, steps=10
    )
    assert step._cache_size() == 1
    norms = {k: np.linalg.norm(v) for k, v in by_path(init).items()}
    for _, state in history[1:]:
        got = layca_optax.tracked_metrics(state)
        assert len(got) == 3 * len(LAYERS)  # no cosine without reference
        for layer, m in multipliers.items():
            rate = got[f"track/rate/{layer}"]
            np.testing.assert_allclose(rate, lr * m, rtol=1e-4)
            # Layca keeps the norm: u is a chord, |r| / t = tan(theta / 2).
            half = np.tan(np.arctan(lr * m) / 2)
            ratio = got[f"track/radial_ratio/{layer}"]
            np.testing.assert_allclose(ratio, half, rtol=5e-2)  # r ~ t^2
            norm = got[f"track/norm/{layer}"]
            np.testing.assert_allclose(norm, norms[layer], rtol=1e-5)
    rates = optax.tree.get(history[-1][1], "rotation_rate")
    assert isinstance(rates["Conv_0"]["bias"], optax.MaskedNode)
    assert rates["blocks"][1].dtype == jnp.float32


def test_adam_chain_under_jit_unchanged_updates_no_recompilation():
    params = random_tree(0)
    track = layca_optax.track_rotation(reference="sketch", sketch_dim=8)
    history, step = run(optax.chain(optax.adam(1e-2), track), params, 3)
    plain, _ = run(optax.adam(1e-2), params, 3)
    assert step._cache_size() == 1
    for (p, _), (q, _) in zip(history, plain, strict=True):
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
            np.testing.assert_array_equal(a, b)  # the updates are untouched
    states = [s for _, s in history]
    avals = [jax.tree.map(jax.typeof, s) for s in states]
    assert all(a == avals[0] for a in avals)
    sketch = optax.tree.get(states[-1], "reference")["Dense_0"]["kernel"]
    assert sketch.shape == (8 + 2,) and sketch.dtype == jnp.float32


def test_map_params_survives():
    params = random_tree(0)
    tx = optax.chain(
        optax.adam(1e-2), layca_optax.track_rotation(reference="exact")
    )
    state = run(tx, params, 1)[0][-1][1]
    same = optax.tree.map_params(tx, lambda v: v, state)
    assert jax.tree.structure(same) == jax.tree.structure(state)
    doubled = optax.tree.map_params(tx, lambda v: 2 * v, state)
    ref, ref2 = (optax.tree.get(s, "reference") for s in (state, doubled))
    np.testing.assert_array_equal(ref2["blocks"][0], 2 * ref["blocks"][0])
    count = optax.tree.get(doubled, "TrackRotationState").count
    assert int(count) == 1


@pytest.mark.parametrize("reference", ["bfloat16", "sketch"])
@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_bfloat16_params_give_finite_float32_metrics(reference):
    params = jax.tree.map(
        lambda x: jnp.asarray(x, jnp.bfloat16), random_tree(0)
    )
    track = layca_optax.track_rotation(reference=reference)
    history, _ = run(optax.chain(optax.sgd(0.05), track), params, 2)
    f32 = jax.tree.map(lambda x: x.astype(jnp.float32), history[-2][0])
    want = jax.jit(layca_optax.rotation_rate)(history[-1][0], f32)
    got = layca_optax.tracked_metrics(history[-1][1])
    assert len(got) == 4 * len(LAYERS)
    for key, value in got.items():
        assert value.dtype == jnp.float32 and np.isfinite(value), key
    for layer in LAYERS:
        rate = got[f"track/rate/{layer}"]
        np.testing.assert_allclose(rate, by_path(want)[layer], rtol=0.05)


def test_degenerate_layers_read_finite_values():
    w = jnp.array([[3.0, 4.0]])
    cases = {  # (w, u): (rate, ratio, norm)
        "zero_layer": (jnp.zeros((1, 2)), w, (0.0, 0.0, 5.0)),
        "zero_update": (w, jnp.zeros((1, 2)), (0.0, 0.0, 5.0)),
        "radial": (w, 0.5 * w, (0.0, 1 / np.finfo(np.float32).eps, 7.5)),
        "to_zero": (w, -w, (0.0, 1 / np.finfo(np.float32).eps, 0.0)),
        "half_turn": (w, -2 * w, (0.0, 1 / np.finfo(np.float32).eps, 5.0)),
    }
    params = {k: p for k, (p, _, _) in cases.items()}
    updates = {k: u for k, (_, u, _) in cases.items()}
    tx = layca_optax.track_rotation(reference="exact")
    _, state = jax.jit(tx.update)(updates, tx.init(params), params)
    for name, (_, _, (rate, ratio, norm)) in cases.items():
        np.testing.assert_allclose(state.rotation_rate[name], rate, atol=1e-6)
        np.testing.assert_allclose(state.radial_ratio[name], ratio, rtol=1e-6)
        np.testing.assert_allclose(state.weight_norm[name], norm, rtol=1e-6)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


def test_mask_and_axis():
    params, updates = random_tree(0), random_tree(1)
    only_conv = {"Conv_0": True, "Dense_0": False, "blocks": False}
    tx = layca_optax.track_rotation(mask=only_conv, axis=0, reference="exact")
    state0 = tx.init(params)
    _, state = jax.jit(tx.update)(updates, state0, params)
    shapes = [jax.tree.map(jnp.shape, s) for s in (state0, state)]
    assert shapes[0] == shapes[1]
    # The kept axes' shape: (3, 2, 4) for the (3, 3, 2, 4) kernel, a
    # scalar for the (4,) bias (axis 0 is all of it).
    assert state.rotation_rate["Conv_0"]["kernel"].shape == (3, 2, 4)
    assert state.rotation_rate["Conv_0"]["bias"].shape == ()
    new = jax.tree.map(lambda w, u: w + u, params, updates)  # in numpy
    rate = functools.partial(layca_optax.rotation_rate, mask=only_conv, axis=0)
    want = jax.jit(rate)(new, params)
    assert jnp.shape(want["Conv_0"]["kernel"]) == (3, 2, 4)
    got = layca_optax.tracked_metrics(state, prefix="t_")
    for m in ("rate", "radial_ratio", "norm", "cosine"):
        names = [k for k in got if k.startswith(f"t_{m}/")]
        assert names == [f"t_{m}/Conv_0/{leaf}" for leaf in ["bias", "kernel"]]
    assert got["t_rate/Conv_0/kernel"].shape == (3, 2, 4)  # split on host:
    history = layca_optax.RotationHistory()
    history.append(0, jax.device_get(got))
    kernel = [f"kernel/{i}/{j}/{k}" for i, j, k in np.ndindex(3, 2, 4)]
    assert history.layers("t_rate/") == ["Conv_0/bias"] + [
        f"Conv_0/{leaf}" for leaf in kernel
    ]
    np.testing.assert_allclose(
        got["t_rate/Conv_0/bias"], want["Conv_0"]["bias"], rtol=1e-4
    )
    for i, j, k in np.ndindex(3, 2, 4):
        np.testing.assert_allclose(
            history.as_array(f"t_rate/Conv_0/kernel/{i}/{j}/{k}")[0],
            want["Conv_0"]["kernel"][i, j, k],
            rtol=1e-4,
        )


def test_errors():
    params = random_tree(0)
    tx = layca_optax.track_rotation()
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"`track_rotation` needs .*params"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="differ in structure"):
        tx.update({"a": 1.0}, state, params)
    bad = {
        "reference": ({"reference": "bf16"}, "'bf16'"),
        "sketch_dim": ({"sketch_dim": 0}, "0"),
        "axis": ({"reference": "sketch", "axis": 0}, "0"),
    }
    for name, (kwargs, value) in bad.items():
        match = rf"`track_rotation\({name}=\.\.\.\)`.*got {value}"
        with pytest.raises(ValueError, match=match):
            layca_optax.track_rotation(**kwargs)
    with pytest.raises(ValueError, match=r"holds no track_rotation\(\) state"):
        layca_optax.tracked_metrics(optax.adam(1.0).init(params))
    two = optax.chain(tx, tx)
    with pytest.raises(ValueError, match=r"holds 2 track_rotation\(\) states"):
        layca_optax.tracked_metrics(two.init(params))


def _rotated(w, d, rng):
    """`w` turned to cosine distance `d` in a random direction, scaled."""
    v = rng.normal(size=w.shape)
    v -= np.vdot(v, w) / np.vdot(w, w) * w
    v *= np.linalg.norm(w) / np.linalg.norm(v)
    theta = np.arccos(1 - d)
    return (1.3 * (np.cos(theta) * w + np.sin(theta) * v)).astype(np.float32)


@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_reference_modes_memory_and_documented_errors():
    """Conv and Dense kernels of realistic sizes, d from 1e-4 to 1."""
    rng = np.random.default_rng(0)
    shapes = {"c": (3, 3, 64, 64), "d": (512, 256), "head": (64, 10)}
    w0 = {
        k: (rng.normal(size=s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32)
        for k, s in shapes.items()
    }
    dists = np.array([1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0])
    ups = [{k: _rotated(w, d, rng) - w for k, w in w0.items()} for d in dists]
    ups = jax.tree.map(lambda *x: np.stack(x), *ups)

    def exact(k):  # float64, of the float32 weights after the update
        a = (w0[k] + ups[k]).reshape(len(dists), -1).astype(np.float64)
        b = w0[k].ravel().astype(np.float64)
        return 1 - a @ b / np.linalg.norm(a, axis=1) / np.linalg.norm(b)

    def track(reference, u, key=None):
        tx = layca_optax.track_rotation(reference=reference, key=key)
        return tx.update(u, tx.init(w0), w0)[1].cosine_distance

    for reference in ("exact", "bfloat16"):
        got = jax.jit(jax.vmap(functools.partial(track, reference)))(ups)
        for k, w in w0.items():
            bound = 1e-6 if reference == "exact" else 5e-3 / w.size**0.5 + 1e-5
            assert np.max(np.abs(got[k] - exact(k))) < bound, (reference, k)
    keys = jax.random.split(jax.random.key(1), 32)
    per_key = jax.vmap(lambda key, u: track("sketch", u, key), (None, 0))
    got = jax.jit(jax.vmap(per_key, (0, None)))(keys, ups)
    rel = np.stack([np.abs(np.asarray(got[k]) / exact(k) - 1) for k in w0])
    ratio = rel / ((2 - dists) / np.sqrt(256))  # over the documented rms
    assert 0.8 < np.sqrt(np.mean(ratio**2)) < 1.2
    assert np.all(np.sqrt(np.mean(ratio**2, axis=(0, 1))) < 1.5)
    assert np.quantile(ratio, 0.99) < 3
    # Memory: the copy, half of it, or 256 float32 per layer (and the
    # layer's size in 2 more), plus scalars.
    n = sum(int(np.prod(s)) for s in shapes.values())
    scalars = 4 + 3 * 4 * len(shapes)
    for reference, size in [
        (None, scalars),
        ("exact", scalars + 4 * len(shapes) + 4 * n),
        ("bfloat16", scalars + 4 * len(shapes) + 2 * n),
        ("sketch", scalars + 4 * len(shapes) + 4 * 258 * len(shapes)),
    ]:
        state = layca_optax.track_rotation(reference=reference).init(w0)
        assert sum(x.nbytes for x in jax.tree.leaves(state)) == size
