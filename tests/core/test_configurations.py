"""Configurations a user tries first: each trains correctly.

Written as users call the library (Flax NNX with a scanned stack, plain
dicts, MoE trees, Muon, inject_hyperparams, a plateau schedule); each
failed silently, or with an error from deep inside jax or optax, before
the checks of tests/core/test_layca_misuse.py (which says why not where a
configuration cannot work) existed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import layca_optax


LR = 0.1


class Block(nnx.Module):
    def __init__(self, d, rngs):
        self.mlp = nnx.Linear(d, d, rngs=rngs)
        self.norm = nnx.LayerNorm(d, rngs=rngs)

    def __call__(self, x):
        return x + self.mlp(self.norm(x))


class ScannedModel(nnx.Module):
    """An embedding, ``L`` stacked blocks run with ``nnx.scan``, a head."""

    def __init__(self, d=4, num_layers=3, *, rngs):
        self.embed = nnx.Embed(10, d, rngs=rngs)

        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return Block(d, rngs)

        self.h = make(rngs)
        self.head = nnx.Linear(d, 3, rngs=rngs)

    def __call__(self, tokens):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.head(body(self.embed(tokens), self.h).mean(0))


def _flat(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {layca_optax.path_str(p): x for p, x in flat}


def scanned_params():
    return nnx.state(ScannedModel(rngs=nnx.Rngs(0)), nnx.Param)


def _moe_params():
    keys = jax.random.split(jax.random.key(0), 4)
    return {
        "moe": {
            "experts": {"kernel": jax.random.normal(keys[0], (2, 3, 4, 5))},
            "bias": jax.random.normal(keys[1], (2, 3, 5)),
        },
        "conv": {"kernel": jax.random.normal(keys[2], (3, 3, 4, 5))},
        "ln": {"scale": jnp.ones((2, 4))},
        "embedding": jax.random.normal(keys[3], (7, 4)),
    }


def _grads_like(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, x.shape)
            for k, x in zip(keys, leaves, strict=True)
        ]
    )


def _slice_tangents(new, old, axes):
    """NumPy: tan of the angle between ``new`` and ``old`` per slice, and the
    ratio of their norms (``axes`` reduced)."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    dot = np.sum(new * old, axis=axes)
    nn_, no = (
        np.sqrt(np.sum(new**2, axis=axes)),
        np.sqrt(np.sum(old**2, axis=axes)),
    )
    cos = np.clip(dot / (nn_ * no), -1, 1)
    return np.tan(np.arccos(cos)), nn_ / no


# 1. Optax's directions as `base`.


@pytest.mark.parametrize(
    "base",
    [
        optax.scale_by_adam(),
        optax.trace(0.9),
        optax.scale_by_rms(),
        optax.scale_by_lion(),
        optax.ema(0.9, debias=False),
        optax.chain(optax.add_decayed_weights(1e-4), optax.scale_by_adam()),
    ],
    ids=["adam", "trace", "rms", "lion", "ema", "wd-adam"],
)
@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_directions_as_base_train(base):
    params = {"w": jax.random.normal(jax.random.key(0), (4, 4))}
    target = jnp.eye(4)

    def loss(p):
        return jnp.sum((p["w"] / jnp.linalg.norm(p["w"]) - target / 2) ** 2)

    tx = layca_optax.layca(0.05, base=base)
    state = tx.init(params)
    start = loss(params)
    for _ in range(30):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


# 2. optax.inject_hyperparams and callables.


@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_inject_hyperparams_static_callables_match_plain():
    params = _moe_params()
    grads = _grads_like(params)
    kwargs = {"axis": layca_optax.fan_in_axes, "other": optax.sgd(0.1)}
    plain = layca_optax.layca(LR, **kwargs)
    injected = optax.inject_hyperparams(
        layca_optax.layca, static_args=("axis",)
    )(learning_rate=LR, **kwargs)
    want, _ = plain.update(grads, plain.init(params), params)
    got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want
    )


# 3. The default layer mask.


def test_default_mask_follows_flax_names_on_a_scanned_model():
    mask = _flat(layca_optax.default_layer_mask(scanned_params()))
    assert {k for k, v in mask.items() if v} == {"h/mlp/kernel", "head/kernel"}


# 4. Per-leaf axis: stacked layers, experts, conv kernels.


def _moe_axis(path, leaf):
    return (-2, -1) if path.startswith("moe/") else None


@pytest.mark.parametrize(
    "axis",
    [
        _moe_axis,
        {"moe": (-2, -1), "conv": None, "ln": None, "embedding": None},
    ],
    ids=["callable", "prefix-tree"],
)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.slow  # 2 s on 2 cores: out of `make test-fast`
def test_per_leaf_axis_turns_each_expert_by_arctan_lr(axis, fused):
    params = _moe_params()
    mask = {
        "moe": {"experts": True, "bias": False},
        "conv": True,
        "ln": False,
        "embedding": False,
    }
    tx = layca_optax.layca(
        LR, axis=axis, mask=mask, other=optax.sgd(0.1), fused=fused
    )
    grads = _grads_like(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    tan, ratio = _slice_tangents(
        new["moe"]["experts"]["kernel"],
        params["moe"]["experts"]["kernel"],
        (2, 3),
    )
    assert tan.shape == (2, 3)
    np.testing.assert_allclose(tan, LR, rtol=1e-4)
    np.testing.assert_allclose(ratio, 1, rtol=1e-6)
    tan, ratio = _slice_tangents(
        new["conv"]["kernel"], params["conv"]["kernel"], (0, 1, 2, 3)
    )
    np.testing.assert_allclose(tan, LR, rtol=1e-4)


def test_per_leaf_axis_on_a_scanned_nnx_model():
    model = ScannedModel(rngs=nnx.Rngs(0))
    axis = lambda path, leaf: (-2, -1) if path.startswith("h/") else None  # noqa: E731
    tx = layca_optax.layca(
        LR,
        base=optax.scale_by_adam(),
        axis=axis,
        mask=layca_optax.default_layer_mask,
        other=optax.adam(1e-3),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    old = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            return jnp.sum(m(jnp.arange(5)) ** 2)

        optimizer.update(model, nnx.grad(loss)(model))

    step(model, optimizer)
    new = _flat(nnx.state(model, nnx.Param))
    old = _flat(old)
    tan, ratio = _slice_tangents(
        new["h/mlp/kernel"], old["h/mlp/kernel"], (1, 2)
    )
    assert tan.shape == (3,)
    np.testing.assert_allclose(tan, LR, rtol=1e-4)
    np.testing.assert_allclose(ratio, 1, rtol=1e-6)


# 5. Muon as base.


def test_muon_with_dimension_numbers_turns_stacked_layers():
    params = {"h": {"kernel": jax.random.normal(jax.random.key(0), (3, 4, 5))}}
    axis = (-2, -1)
    muon = optax.contrib.scale_by_muon(
        weight_dimension_numbers=layca_optax.muon_dimension_numbers(axis)
    )
    tx = layca_optax.layca(LR, base=muon, axis=axis)
    grads = _grads_like(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    tan, ratio = _slice_tangents(
        new["h"]["kernel"], params["h"]["kernel"], (1, 2)
    )
    np.testing.assert_allclose(tan, LR, rtol=1e-4)
    np.testing.assert_allclose(ratio, 1, rtol=1e-6)


# 6. Transforms after layca; the plateau recipe of docs/howto/schedules.md.


def test_scaling_after_layca_breaks_its_guarantee():
    params = {"w": jax.random.normal(jax.random.key(0), (4, 4))}
    grads = _grads_like(params)
    tx = optax.chain(layca_optax.layca(0.2), optax.scale(0.5))
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    tan, ratio = _slice_tangents(new["w"], params["w"], (0, 1))
    assert abs(float(ratio) - 1) > 1e-3  # what the docs warn about
    assert abs(float(tan) - 0.1) > 5e-4


def test_plateau_recipe_cuts_the_angle_and_keeps_the_norm():
    params = _moe_params()
    grads = _grads_like(params)
    lr0 = 0.2
    tx = optax.inject_hyperparams(layca_optax.layca, static_args=("mask",))(
        learning_rate=lr0,
        base=optax.scale_by_adam(),
        mask=layca_optax.default_layer_mask,
        other=optax.sgd(0.1),
    )
    plateau = optax.contrib.reduce_on_plateau(factor=0.5, patience=2)
    state, plateau_state = tx.init(params), plateau.init(params)
    for value in [1.0, 0.9, 0.9, 0.9, 0.9]:
        _, plateau_state = plateau.update(params, plateau_state, value=value)
    assert float(plateau_state.scale) == 0.5
    state = optax.tree.set(state, learning_rate=lr0 * plateau_state.scale)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    tan, ratio = _slice_tangents(
        new["conv"]["kernel"], params["conv"]["kernel"], (0, 1, 2, 3)
    )
    np.testing.assert_allclose(tan, 0.1, rtol=1e-4)
    np.testing.assert_allclose(ratio, 1, rtol=1e-6)


# 7. Smaller traps.


def test_layca_step_count_by_state_name():
    state = layca_optax.layca(0.1, base=optax.scale_by_adam()).init(
        {"w": jnp.eye(2)}
    )
    with pytest.raises(KeyError, match="multiple values for 'count'"):
        optax.tree.get(state, "count")
    count = optax.tree.get(
        state,
        "count",
        filtering=lambda path, _: (
            getattr(path[-1], "tuple_name", None) == "ScaleByLaycaState"
        ),
    )
    assert int(count) == 0
