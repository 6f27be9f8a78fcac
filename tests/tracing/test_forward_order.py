"""`forward_order`: the layers' order of first use, found by tracing.

Each model names its layers against their order (numbered as created,
attributes or keys sorted against use), so leaf order is never the answer.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import layca_optax
from layca_optax._masks import leaf_paths


def _kernels(order):
    return [f"{name}/kernel" for name in order]


# --- Flax Linen ResNet --------------------------------------------------------


class ResNet(nn.Module):
    """A stem, five residual blocks and a Dense head: 14 layers.

    Modules are numbered as created. A block's projection shortcut is
    created after its second conv but used before its first.
    """

    @nn.compact
    def __call__(self, x, train):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train)
        x = nn.relu(norm()(nn.Conv(8, (3, 3))(x)))
        for features, strides in [(8, 1), (12, 2), (12, 1), (16, 2), (16, 1)]:
            conv_a = nn.Conv(features, (3, 3), strides)
            conv_b = nn.Conv(features, (3, 3))
            shortcut = x
            if strides != 1:
                shortcut = norm()(nn.Conv(features, (1, 1), strides)(x))
            y = nn.relu(norm()(conv_a(x)))
            x = nn.relu(norm()(conv_b(y)) + shortcut)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


RESNET_ORDER = _kernels(  # stem, blocks (shortcuts first), head
    ["Conv_0", "Conv_1", "Conv_2", "Conv_5", "Conv_3", "Conv_4", "Conv_6"]
    + ["Conv_7", "Conv_10", "Conv_8", "Conv_9", "Conv_11", "Conv_12", "Dense_0"]
)
X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)))
Y = jnp.array([0, 2])


def _fill(path, leaf):
    """Kernels random, BatchNorm at its init: no eager `init` (slow)."""
    name = layca_optax.path_str(path)
    if leaf.ndim >= 2:
        rng = np.random.default_rng(len(name))
        return jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype)
    one = name.endswith(("scale", "var"))
    return jnp.full(leaf.shape, 1.0 if one else 0.0, leaf.dtype)


@pytest.fixture(scope="module")
def resnet():
    model = ResNet()
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), X
    )
    variables = jax.tree_util.tree_map_with_path(_fill, shapes)
    return model, variables["params"], variables["batch_stats"]


def test_resnet_linen(resnet):
    model, params, stats = resnet

    def apply(p, x, train):
        return model.apply(
            {"params": p, "batch_stats": stats},
            x,
            train=train,
            mutable=["batch_stats"] if train else False,
        )

    order = layca_optax.forward_order(apply, params, X, train=False)
    assert order == RESNET_ORDER
    layers = [p for p in leaf_paths(params) if p.endswith("kernel")]
    assert sorted(order) == sorted(layers) and order != layers
    # Training mode, a static flag as a keyword, shapes only.
    x = jax.ShapeDtypeStruct(X.shape, X.dtype)
    assert layca_optax.forward_order(apply, params, x, train=True) == order
    abstract = jax.eval_shape(lambda: params)
    assert layca_optax.forward_order(apply, abstract, x, False) == order


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_layca_alpha_follows_forward_order(resnet):
    model, params, stats = resnet
    order = layca_optax.forward_order(
        lambda p, x: model.apply({"params": p, "batch_stats": stats}, x, False),
        params,
        X,
    )
    tx = layca_optax.layca(0.1, alpha=0.6, layer_order=order)

    def loss(p):
        logits = model.apply({"params": p, "batch_stats": stats}, X, False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    @jax.jit  # one compilation: the step and its measure
    def step_rates(p):
        updates, _ = tx.update(jax.grad(loss)(p), tx.init(p), p)
        return layca_optax.rotation_rate(optax.apply_updates(p, updates), p)

    rates = step_rates(params)
    rate = {p: rates[p.split("/")[0]]["kernel"] for p in order}
    assert order[0] == "Conv_0/kernel"  # the input conv
    np.testing.assert_allclose(rate[order[0]], 0.1 * 0.4**5, rtol=1e-4)
    np.testing.assert_allclose(rate["Dense_0/kernel"], 0.1, rtol=1e-4)
    expected = 0.1 * np.array(layca_optax.depth_multipliers(0.6, 14))
    np.testing.assert_allclose([rate[p] for p in order], expected, rtol=1e-4)


# --- Flax NNX -----------------------------------------------------------------


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.z_in = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.m_norm = nnx.BatchNorm(4, rngs=rngs)
        self.b_mid = nnx.Linear(4, 4, rngs=rngs)
        self.a_out = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.m_norm(self.z_in(x))).mean(axis=(1, 2))
        return self.a_out(nnx.relu(self.b_mid(h)))


def test_nnx():
    model = NnxNet(nnx.Rngs(0))
    expected = _kernels(["z_in", "b_mid", "a_out"])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # Training mode: `rest` traced, so BatchNorm may update its statistics.
    order = layca_optax.forward_order(
        lambda p, rest, x: nnx.merge(graphdef, p, rest)(x), params, rest, X
    )
    assert order == expected
    names = leaf_paths(nnx.state(model, nnx.Param))  # nnx.Optimizer's
    assert sorted(order) == [p for p in names if p.endswith("kernel")]
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    order = layca_optax.forward_order(
        lambda p, x: nnx.merge(graphdef, p, rest)(x), params, X
    )
    assert order == expected


# --- Plain functions ----------------------------------------------------------


def _dense(n_in, n_out):
    return {"w": jnp.ones((n_in, n_out)), "b": jnp.zeros(n_out)}


def mlp(p, x, *, act=jnp.tanh):
    # Moved early (cast, transpose, reshape, passed through a jit), used last.
    w_out = jax.jit(lambda w: w)(p["out"]["w"].T.astype(jnp.bfloat16).T)
    h = act(x @ p["in"]["w"] + p["in"]["b"][None])
    h = act(h @ p["hidden"]["w"] + p["hidden"]["b"][None])
    return h @ w_out.astype(jnp.float32) + p["out"]["b"][None]


MLP_PARAMS = {"out": _dense(4, 2), "hidden": _dense(4, 4), "in": _dense(3, 4)}


def test_plain_mlp():
    x = jax.ShapeDtypeStruct((5, 3), jnp.float32)
    # A function as a keyword argument: passed as it is, not traced.
    order = layca_optax.forward_order(mlp, MLP_PARAMS, x, act=jax.nn.relu)
    assert order == ["in/w", "hidden/w", "out/w"]
    assert leaf_paths(MLP_PARAMS)[1::2] == ["hidden/w", "in/w", "out/w"]
    every = lambda t: jax.tree.map(lambda _: True, t)
    order = layca_optax.forward_order(mlp, MLP_PARAMS, x, mask=every)
    assert order == ["in/w", "in/b", "hidden/w", "hidden/b", "out/w", "out/b"]
    mask = {"out": False, "hidden": True, "in": {"w": True, "b": False}}
    order = layca_optax.forward_order(mlp, MLP_PARAMS, x, mask=mask)
    assert order == ["in/w", "hidden/w", "hidden/b"]


def test_ties_unused_printed_and_returned_leaves():
    params = {k: jnp.ones((3, 3)) for k in ["a", "b", "c", "d", "e"]}

    def fn(p, x):
        jax.debug.print("{}", p["a"])  # printing is not a use
        both = jnp.concatenate([p["d"], p["b"]], axis=1)  # used at once
        return (x @ both)[:, :3] @ p["a"], p["e"]  # returning: not a use

    x = jnp.ones((2, 3))
    order = layca_optax.forward_order(fn, params, x)
    assert order == ["b", "d", "a", "c", "e"]  # never used: last, leaf order
    with pytest.raises(ValueError, match=r"forward_order\(strict=True\).*'c'"):
        layca_optax.forward_order(fn, params, x, strict=True)
    # A tie broken by the first read: the lookup before the Dense.
    params = {"a_dense": jnp.ones((3, 3)), "z_embed": jnp.ones((5, 3))}
    fn = lambda p, ids: p["z_embed"][ids] @ p["a_dense"]
    order = layca_optax.forward_order(fn, params, jnp.array([4, 0]))
    assert order == ["z_embed", "a_dense"]


# --- Stacked layers, control flow ---------------------------------------------


STACKED = {
    "blocks": jnp.ones((3, 4, 4)),  # 3 stacked layers: one entry
    "embed": jnp.ones((2, 4)),
    "head": jnp.ones((4, 1)),
}


def _scan_model(p, x, n):
    h, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, p["blocks"])
    return h


def _loop_model(p, x, n):  # a traced trip count: a while loop
    return jax.lax.fori_loop(0, n, lambda i, h: h @ p["blocks"][i], x)


@pytest.mark.parametrize("body", [_scan_model, _loop_model])
def test_stacked_layer_axis(body):
    def fn(p, x, n):
        return body(p, x @ p["embed"], n) @ p["head"]

    n = jnp.array(3)
    with pytest.warns(UserWarning, match=r"\['blocks'\] are stacked"):
        order = layca_optax.forward_order(fn, STACKED, jnp.ones((5, 2)), n)
    assert order == ["embed", "blocks", "head"]
    if body is _loop_model:  # indexed, not scanned: the order is unknown
        with pytest.warns(UserWarning, match=r"\['blocks'\] are indexed"):
            sliced = layca_optax.forward_order(
                fn, STACKED, jnp.ones((5, 2)), n, per_slice=True
            )
    else:
        sliced = layca_optax.forward_order(
            fn, STACKED, jnp.ones((5, 2)), n, per_slice=True
        )
    assert sliced == ["embed", "blocks/0", "blocks/1", "blocks/2", "head"]
    axes = layca_optax.infer_stacked_axes(fn, STACKED, jnp.ones((5, 2)), n)
    assert axes == {"blocks": (1, 2), "embed": None, "head": None}
    assert leaf_paths(STACKED) == ["blocks", "embed", "head"]


@jax.custom_vjp
def _custom(h, w):
    return h @ w


_custom.defvjp(lambda h, w: (h @ w, (h, w)), lambda r, g: (g @ r[1].T, g))


def test_checkpoint_cond_jit_custom_vjp():
    params = {k: jnp.eye(3) for k in ["z_first", "b_true", "a_false"]}
    params |= {"y_jit": jnp.eye(3), "x_custom": jnp.eye(3)}

    def fn(p, x, flag):
        h = jax.checkpoint(lambda h: jnp.tanh(h @ p["z_first"]))(x)
        h = jax.lax.cond(
            flag, lambda h: h @ p["b_true"], lambda h: h @ p["a_false"], h
        )
        h = jax.jit(lambda h, w: h @ w.T)(h, p["y_jit"])
        return _custom(h, p["x_custom"])

    x, flag = jnp.ones((2, 3)), jnp.array(True)
    order = layca_optax.forward_order(fn, params, x, flag)
    # cond: branches in index order, false first.
    expected = ["z_first", "a_false", "b_true", "y_jit", "x_custom"]
    assert order == expected
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    assert layca_optax.forward_order(fn, params, np.ones((2, 3)), flag) == (
        expected
    )


# --- Bad input ----------------------------------------------------------------


def test_trace_errors_propagate():
    class Boom(Exception):
        pass

    def boom(p, x):
        raise Boom("no")

    with pytest.raises(Boom, match="no"):
        layca_optax.forward_order(boom, MLP_PARAMS, jnp.ones((5, 3)))
    with pytest.raises(TypeError, match="dot_general"):
        layca_optax.forward_order(mlp, MLP_PARAMS, jnp.ones((5, 7)))


@pytest.mark.parametrize(
    "mask", [{"in": True}, [True, False], {"out": 1, "hidden": 1, "in": 1}]
)
def test_bad_mask(mask):
    with pytest.raises(ValueError, match=r"forward_order\(mask=\.\.\.\)"):
        layca_optax.forward_order(mlp, MLP_PARAMS, jnp.ones((5, 3)), mask=mask)


def test_bad_fn_and_strict():
    with pytest.raises(ValueError, match=r"forward_order\(fn=\.\.\.\).*3"):
        layca_optax.forward_order(3, MLP_PARAMS)
    with pytest.raises(ValueError, match=r"forward_order\(strict=\.\.\.\).*1"):
        layca_optax.forward_order(mlp, MLP_PARAMS, jnp.ones((5, 3)), strict=1)
