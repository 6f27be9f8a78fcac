"""The paper's models: layer counts, shapes, forward order, initializers.

Compiling the full convnets on CPU is slow, so their checks use
`jax.eval_shape`; real initializations run on reduced configurations.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax
from layca_optax.experiments.models import C10CNN1, MLP, ResNet32


def _abstract(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    logits = jax.eval_shape(model.apply, variables, x)
    order = layca_optax.forward_order(
        lambda p, stats, x: model.apply({"params": p, "batch_stats": stats}, x),
        variables["params"],
        variables["batch_stats"],
        x,
    )
    return variables, logits, order


@functools.cache
def _vgg():
    return _abstract(C10CNN1(), (2, 32, 32, 3))


@functools.cache
def _resnet():
    return _abstract(ResNet32(), (2, 32, 32, 3))


def _kernels(params):
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def test_c10cnn1_has_25_kernels_and_no_other_params():
    variables, logits, order = _vgg()
    leaves = _kernels(variables["params"])
    assert len(leaves) == 25
    assert all(p.endswith("/kernel") for p in leaves)
    assert logits.shape == (2, 10)
    shapes = [leaves[p].shape for p in C10CNN1().layer_names]
    assert shapes[0] == (3, 3, 3, 32)
    assert shapes[6] == (3, 3, 32, 64)
    assert shapes[23] == (3, 3, 256, 256)
    assert shapes[24] == (256, 10)
    # BatchNorm without affine parameters still keeps running statistics.
    stats = _kernels(variables["batch_stats"])
    assert len(stats) == 48
    assert stats["stage1_layer0_batch/mean"].shape == (64,)


def test_c10cnn1_forward_order():
    _, _, order = _vgg()
    assert order == list(C10CNN1().layer_names)
    assert order[0] == "stage0_layer0_conv/kernel"
    assert order[-1] == "last_dense/kernel"


def test_resnet32_has_34_kernels_and_no_other_params():
    variables, logits, _ = _resnet()
    leaves = _kernels(variables["params"])
    assert len(leaves) == 34
    assert all(p.endswith("/kernel") for p in leaves)
    assert logits.shape == (2, 100)
    assert leaves["first_conv/kernel"].shape == (3, 3, 3, 16)
    assert leaves["1_0_1_conv/kernel"].shape == (3, 3, 16, 32)
    assert leaves["1_0_strided_conv/kernel"].shape == (1, 1, 16, 32)
    assert leaves["2_0_strided_conv/kernel"].shape == (1, 1, 32, 64)
    assert leaves["last_dense/kernel"].shape == (64, 100)
    # The projection shortcuts have no BatchNorm.
    stats = _kernels(variables["batch_stats"])
    assert len(stats) == 2 * 31
    assert not any("strided" in p for p in stats)


def test_resnet32_forward_order():
    _, _, order = _resnet()
    assert order == list(ResNet32().layer_names)
    assert order[0] == "first_conv/kernel"
    assert order[-1] == "last_dense/kernel"
    # Each stage's shortcut comes after the block's two convolutions.
    i = order.index("1_0_strided_conv/kernel")
    assert order[i - 2 : i] == ["1_0_1_conv/kernel", "1_0_2_conv/kernel"]


def test_resnet_other_depths_and_bad_depth():
    assert len(ResNet32(depth=20).layer_names) == 22
    assert len(ResNet32(depth=110).layer_names) == 112
    with pytest.raises(ValueError, match="ResNet32: depth must be 6n"):
        ResNet32(depth=33).layer_names  # noqa: B018


def test_mlp_params_on_digits_and_mnist_shapes():
    for shape, fan_in in (((2, 8, 8, 1), 64), ((2, 784), 784)):
        variables, logits, order = _abstract(MLP(), shape)
        leaves = _kernels(variables["params"])
        assert set(leaves) == {
            "dense0/kernel",
            "dense0/bias",
            "batch/scale",
            "batch/bias",
            "densef/kernel",
            "densef/bias",
        }
        assert leaves["dense0/kernel"].shape == (fan_in, 784)
        assert logits.shape == (2, 10)
        assert order == list(MLP().layer_names)


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_mlp_init_and_batch_norm_momentum():
    model = MLP(hidden=32)
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    w = np.asarray(variables["params"]["dense0"]["kernel"])
    assert np.abs(w).max() <= np.sqrt(6 / (64 + 32))  # Glorot uniform
    assert not np.any(variables["params"]["dense0"]["bias"])
    logits, updates = model.apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    assert logits.shape == (16, 10)
    mean = updates["batch_stats"]["batch"]["mean"]
    h = x.reshape(16, -1) @ variables["params"]["dense0"]["kernel"]
    np.testing.assert_allclose(mean, 0.01 * h.mean(0), rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # 13 s on 2 cores: out of `make test-fast`
def test_conv_initializers_on_small_configurations():
    vgg, res = C10CNN1(stages=(1, 1), filters=(8, 64)), ResNet32(depth=8)
    x = jnp.zeros((1, 32, 32, 3))
    init = jax.jit(lambda key: (vgg.init(key, x), res.init(key, x)))
    vgg_vars, res_vars = init(jax.random.key(0))
    w = np.asarray(vgg_vars["params"]["stage1_layer0_conv"]["kernel"])
    bound = np.sqrt(6 / (3 * 3 * 8))  # He uniform
    assert bound * 0.95 < np.abs(w).max() <= bound
    w = np.asarray(res_vars["params"]["2_0_1_conv"]["kernel"])
    std = np.sqrt(2 / (3 * 3 * 32))  # He normal (truncated, as Keras)
    assert np.std(w) == pytest.approx(std, rel=0.1)
    assert np.abs(w).max() <= 2 * std / 0.87962566
    names = {n.split("/")[0] for n in res.layer_names}
    assert set(res_vars["params"]) == names
