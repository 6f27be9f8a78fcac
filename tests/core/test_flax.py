"""`layca_optax` with Flax: NNX's `nnx.Optimizer` and Linen's `TrainState`.

Models with Conv and Dense/Linear kernels (layers), their biases and
BatchNorm scales and biases (not layers): one step turns every kernel by
exactly ``arctan(learning_rate)`` at constant norm, while the other
parameters follow ``other`` (or stay put without it).
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import layca_optax


# The layca_path fixture (tests/conftest.py) runs a test with `layca`'s fused
# step, then with its chain of primitives: only tests that build a `layca`
# through `layca_optax.layca` take it.
both_paths = pytest.mark.usefixtures("layca_path")


LR = 0.1
# 1 - cos(arctan(LR)): the cosine distance to init after one Layca step.
ONE_STEP_DISTANCE = 1 - 1 / np.sqrt(1 + LR**2)

_RNG = np.random.default_rng(1)
X = jnp.asarray(_RNG.standard_normal((8, 6, 6, 2)), jnp.float32)
Y = jnp.asarray(_RNG.integers(0, 3, (8,)), jnp.int32)

OTHERS = pytest.mark.parametrize("other", ["none", "sgd"])


def _txs(other):
    """``(other, layca)`` for ``other`` ("none", "sgd"), built with the
    ``layca`` of the running test's path (the ``layca_path`` fixture patches
    it: an optimizer built at import ran the fused step in the ``[chain]``
    cases), one object per path so that jitted steps are reused."""
    fused = getattr(layca_optax.layca, "keywords", {}).get("fused", True)
    return _cached_txs(other, fused)


@functools.cache
def _cached_txs(other, fused):
    if other == "none":
        return None, layca_optax.layca(LR, fused=fused)
    sgd = optax.sgd(LR)
    return sgd, layca_optax.layca(LR, other=optax.sgd(LR), fused=fused)


def _flat(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {layca_optax.path_str(p): x for p, x in flat}


def _check_step(new, old, grads, other):
    """Kernels turned by arctan(LR) at constant norm; the rest per `other`."""
    chex.assert_tree_all_finite(new)
    rates = _flat(layca_optax.rotation_rate(new, old))
    new, old, grads = _flat(new), _flat(old), _flat(grads)
    kernels = sorted(k for k in new if k.endswith("kernel"))
    assert sorted(rates) == kernels
    for path in kernels:
        np.testing.assert_allclose(rates[path], LR, rtol=1e-5)
        np.testing.assert_allclose(
            jnp.linalg.norm(new[path]), jnp.linalg.norm(old[path]), rtol=1e-6
        )
    for path in sorted(set(new) - set(kernels)):
        if other is None:
            np.testing.assert_array_equal(new[path], old[path], err_msg=path)
        else:
            np.testing.assert_allclose(
                new[path],
                old[path] - LR * grads[path],
                rtol=1e-6,
                atol=1e-7,
                err_msg=path,
            )
    return kernels


def _xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels
    ).mean()


# --- NNX ----------------------------------------------------------------------


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.linear = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        return self.linear(x.mean(axis=(1, 2)))


# `nnx.as_pure` is `nnx.pure` in flax 0.12.0 (the minimum, see README).
as_pure = getattr(nnx, "as_pure", None) or nnx.pure


def _nnx_params(model):
    return as_pure(nnx.state(model, nnx.Param))


@nnx.jit
def _nnx_step(model, optimizer):
    grads = nnx.grad(lambda m: _xent(m(X), Y))(model)
    optimizer.update(model, grads)
    return grads


@both_paths
@OTHERS
def test_nnx_optimizer_step(other):
    other, tx = _txs(other)
    model = NnxCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    old = _nnx_params(model)
    old_stats = as_pure(nnx.state(model, nnx.BatchStat))

    grads = as_pure(_nnx_step(model, optimizer))
    new = _nnx_params(model)

    kernels = _check_step(new, old, grads, other)
    assert kernels == ["conv/kernel", "linear/kernel"]
    assert int(optimizer.step[...]) == 1
    if other is not None:  # the non-layers did move
        for layer, leaf in [("linear", "bias"), ("bn", "scale")]:
            assert not np.array_equal(new[layer][leaf], old[layer][leaf])
    new_stats = as_pure(nnx.state(model, nnx.BatchStat))
    assert not np.array_equal(new_stats["bn"]["mean"], old_stats["bn"]["mean"])


# --- Linen --------------------------------------------------------------------


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(3)(x)


class TrainState(train_state.TrainState):
    batch_stats: dict


def _linen_state(tx):
    model = LinenCNN()
    variables = model.init(jax.random.key(0), X, train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=tx,
    )


@jax.jit
def _linen_step(state):
    def loss_fn(params):
        logits, mutated = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            X,
            train=True,
            mutable=["batch_stats"],
        )
        return _xent(logits, Y), mutated["batch_stats"]

    grads, stats = jax.grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=stats), grads


@both_paths
@OTHERS
def test_linen_train_state_step(other):
    other, tx = _txs(other)
    state = _linen_state(tx)
    new, grads = _linen_step(state)

    kernels = _check_step(new.params, state.params, grads, other)
    assert kernels == ["Conv_0/kernel", "Dense_0/kernel"]
    assert int(new.step) == 1
    if other is not None:
        for layer, leaf in [("Dense_0", "bias"), ("BatchNorm_0", "scale")]:
            assert not np.array_equal(
                new.params[layer][leaf], state.params[layer][leaf]
            )
    assert not np.array_equal(
        new.batch_stats["BatchNorm_0"]["mean"],
        state.batch_stats["BatchNorm_0"]["mean"],
    )


# --- training -----------------------------------------------------------------


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(2)(x)


@both_paths
@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_training_reduces_the_loss():
    """Two Gaussian blobs: Layca on the kernels, SGD on the biases."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (64,))
    centers = rng.standard_normal((2, 4))
    x = centers[labels] + 0.5 * rng.standard_normal((64, 4))
    x, labels = jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32)

    model = MLP()
    params = model.init(jax.random.key(4), x)["params"]
    tx = layca_optax.layca(LR, other=optax.sgd(LR))

    def loss_fn(params):
        return _xent(model.apply({"params": params}, x), labels)

    @jax.jit
    def train(params):
        def body(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(
            body, (params, tx.init(params)), length=40
        )
        return params, losses

    final, losses = train(params)
    final_loss = float(loss_fn(final))
    assert final_loss < 0.5 * float(losses[0]), (float(losses[0]), final_loss)
    accuracy = jnp.mean(
        jnp.argmax(model.apply({"params": final}, x), -1) == labels
    )
    assert accuracy > 0.9
    # The kernels only turned: same norms as at init.
    for layer in ("Dense_0", "Dense_1"):
        np.testing.assert_allclose(
            jnp.linalg.norm(final[layer]["kernel"]),
            jnp.linalg.norm(params[layer]["kernel"]),
            rtol=1e-5,
        )


# --- rotation metrics -------------------------------------------------------


def _check_metrics(metrics, kernels):
    assert sorted(metrics) == ["rotation/" + k for k in kernels]
    for key, value in metrics.items():
        assert value.dtype == jnp.float32, key
        np.testing.assert_allclose(value, ONE_STEP_DISTANCE, rtol=1e-4)


def test_rotation_metrics_linen():
    state = _linen_state(_txs("sgd")[1])
    new, _ = _linen_step(state)
    metrics = jax.jit(layca_optax.rotation_metrics)(new.params, state.params)
    _check_metrics(metrics, ["Conv_0/kernel", "Dense_0/kernel"])
    at_init = jax.jit(layca_optax.rotation_metrics)(state.params, state.params)
    assert sorted(at_init) == sorted(metrics)
    for value in at_init.values():
        assert float(value) == 0.0


def test_rotation_metrics_nnx_pure_state():
    model = NnxCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _txs("sgd")[1], wrt=nnx.Param)
    init = _nnx_params(model)
    _nnx_step(model, optimizer)
    metrics = jax.jit(layca_optax.rotation_metrics)(_nnx_params(model), init)
    _check_metrics(metrics, ["conv/kernel", "linear/kernel"])


def test_rotation_metrics_nnx_variable_state():
    """`nnx.state(model, nnx.Param)` as is (Variables, not pure arrays)."""
    model = NnxCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _txs("sgd")[1], wrt=nnx.Param)
    # A snapshot: the State's Variables are the model's own.
    init = jax.tree.map(lambda x: x, nnx.state(model, nnx.Param))
    _nnx_step(model, optimizer)
    params = nnx.state(model, nnx.Param)
    metrics = layca_optax.rotation_metrics(params, init)
    _check_metrics(metrics, ["conv/kernel", "linear/kernel"])
