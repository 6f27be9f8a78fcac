"""Transformers as Flax builds them: stacked multi-axis kernels.

A scanned Flax NNX GPT (``nnx.vmap``-created blocks run by ``nnx.scan``:
attention kernels ``(L, d, H, hd)`` and ``(L, H, hd, d)``, MLP ``(L, d, f)``,
stacked norm scales and biases, an embedding, an untied head), a stacked
mixture of experts ``(L, E, d, f)`` and a Linen ``nn.scan`` stack: the axes
read from the trace, per-slice depth order, and every stacked slice turning
by ``arctan(lr * m_l)`` (Eq. 1 per slice) with its norm kept, checked
against NumPy under ``jit``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn, nnx

import layca_optax
from layca_optax._masks import path_str


L, D, H, HD, V = 3, 16, 2, 8, 11


class Block(nnx.Module):
    def __init__(self, rngs):
        self.ln1 = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            H, D, qkv_features=H * HD, decode=False, rngs=rngs
        )
        self.ln2 = nnx.LayerNorm(D, rngs=rngs)
        self.up = nnx.Linear(D, 4 * D, rngs=rngs)
        self.down = nnx.Linear(4 * D, D, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(nnx.gelu(self.up(self.ln2(x))))


class GPT(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(V, D, rngs=rngs)

        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return Block(rngs)

        self.blocks = blocks(rngs)
        self.head = nnx.Linear(D, V, rngs=rngs)

    def __call__(self, tokens):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)

        return self.head(run(self.embed(tokens), self.blocks))


KERNELS = ["query", "key", "value", "out"]


@pytest.fixture(scope="module")
def gpt():
    graphdef, params, rest = nnx.split(GPT(nnx.Rngs(0)), nnx.Param, ...)
    params = nnx.as_pure(params)
    tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5) % V

    def fn(p, tokens):
        return nnx.merge(graphdef, p, rest)(tokens)

    return fn, params, tokens


def _flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is None or isinstance(x, tuple)
    )[0]
    return {path_str(p): v for p, v in leaves}


def test_the_layouts_flax_produces(gpt):
    _, params, _ = gpt
    shapes = {k: np.shape(v) for k, v in _flat(params).items()}
    assert shapes["blocks/attn/query/kernel"] == (L, D, H, HD)
    assert shapes["blocks/attn/out/kernel"] == (L, H, HD, D)
    assert shapes["blocks/up/kernel"] == (L, D, 4 * D)
    assert shapes["blocks/ln1/scale"] == (L, D)


def test_infer_stacked_axes_one_layer_per_block(gpt):
    fn, params, tokens = gpt
    axes = _flat(layca_optax.infer_stacked_axes(fn, params, tokens))
    for name in KERNELS:
        assert axes[f"blocks/attn/{name}/kernel"] == (1, 2, 3)
    assert axes["blocks/up/kernel"] == axes["blocks/down/kernel"] == (1, 2)
    assert axes["blocks/ln1/scale"] == (1,)
    assert axes["head/kernel"] is None and axes["embed/embedding"] is None
    # rotation_metrics: one value per (block, kernel) plus the head: 19,
    # where axis=(-2, -1) gave one per (block, input row) or (block, head).
    inferred = layca_optax.infer_stacked_axes(fn, params, tokens)
    metrics = layca_optax.rotation_metrics(params, params, axis=inferred)
    assert len(metrics) == L * 6 + 1
    wrong = layca_optax.rotation_metrics(params, params, axis=(-2, -1))
    assert len(wrong) > 100


def test_stacked_axes_rule_and_errors():
    rule = layca_optax.stacked_axes(2)
    params = {"experts": jnp.ones((3, 4, 8, 16)), "head": jnp.ones((8, 2))}
    tx = layca_optax.layca(0.1, axis={"experts": rule, "head": None})
    tx.init(params)
    assert repr(rule) == "stacked_axes(2)"
    with pytest.raises(ValueError, match=r"stacked_axes\(num_stacked=2\).*"):
        layca_optax.rotation_metrics(params, params, axis=rule)
    with pytest.raises(
        ValueError, match=r"stacked_axes\(num_stacked=...\).*got 0"
    ):
        layca_optax.stacked_axes(0)


def test_per_slice_forward_order_is_depth_order(gpt):
    fn, params, tokens = gpt
    order = layca_optax.forward_order(fn, params, tokens, per_slice=True)
    per_block = [f"blocks/attn/{k}/kernel" for k in ["query", "key", "value"]]
    per_block += ["blocks/attn/out/kernel", "blocks/up/kernel"]
    per_block += ["blocks/down/kernel"]
    expected = [f"{n}/{i}" for i in range(L) for n in per_block]
    assert order == expected + ["head/kernel"]
    with pytest.warns(UserWarning, match="are stacked"):
        whole = layca_optax.forward_order(fn, params, tokens)
    assert whole == per_block + ["head/kernel"]


def _numpy_slices(x, axes):
    """Each layer of ``x`` for reduction axes ``axes`` as a NumPy row."""
    x = np.asarray(x, np.float64)
    if axes is None:
        return x.reshape(1, -1)
    kept = [a for a in range(x.ndim) if a not in axes]
    return np.transpose(x, kept + list(axes)).reshape(
        int(np.prod([x.shape[a] for a in kept])), -1
    )


def _slice_names(path, x, axes):
    kept = [n for a, n in enumerate(np.shape(x)) if a not in axes]
    return [path + "".join(f"/{i}" for i in ix) for ix in np.ndindex(*kept)]


def _check_turns(old, new, axes_tree, order, lr, alpha):
    """Per slice: tan(angle) = lr * m_l (Eq. 1 at its depth), norm kept."""
    m = layca_optax.depth_multipliers(alpha, len(order))
    depth = {name: k for k, name in enumerate(order)}
    axes, olds, news = _flat(axes_tree), _flat(old), _flat(new)
    checked = 0
    for path in {re.sub(r"(/\d+)+$", "", n) for n in order}:
        a = _numpy_slices(olds[path], axes[path])
        b = _numpy_slices(news[path], axes[path])
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
        cos /= np.linalg.norm(b, axis=1)
        tan = np.sqrt(1 - cos**2) / cos
        names = (
            [path]
            if axes[path] is None
            else _slice_names(path, olds[path], axes[path])
        )
        want = np.array([lr * m[depth[n]] for n in names])
        np.testing.assert_allclose(tan, want, rtol=2e-3)
        ratio = np.linalg.norm(b, axis=1) / np.linalg.norm(a, axis=1)
        np.testing.assert_allclose(ratio, 1, atol=1e-6)
        checked += len(a)
    assert checked == len(order)


@pytest.mark.parametrize("rule", ["inferred", "stacked_axes"])
@pytest.mark.slow  # 11 s on 2 cores: out of `make test-fast`
def test_gpt_trains_each_slice_by_its_depth(gpt, rule):
    fn, params, tokens = gpt
    order = layca_optax.forward_order(fn, params, tokens, per_slice=True)
    if rule == "inferred":
        axis = layca_optax.infer_stacked_axes(fn, params, tokens)
    else:
        axis = {
            "blocks": layca_optax.stacked_axes(1),
            "embed": None,
            "head": None,
        }
    lr, alpha = 0.05, 0.5
    tx = layca_optax.layca(
        lr,
        base=optax.scale_by_adam(),
        alpha=alpha,
        layer_order=order,
        axis=axis,
        mask=layca_optax.default_layer_mask,
        other=optax.adam(1e-3),
    )

    def loss(p):
        logits = fn(p, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, tokens
        ).mean()

    @jax.jit
    def step(p, state):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    state = tx.init(params)
    p = params
    inferred = layca_optax.infer_stacked_axes(fn, params, tokens)
    for _ in range(3):
        new, state = step(p, state)
        _check_turns(p, new, inferred, order, lr, alpha)
        p = new


def test_per_slice_order_needs_a_stacked_axis(gpt):
    fn, params, tokens = gpt
    order = layca_optax.forward_order(fn, params, tokens, per_slice=True)
    tx = layca_optax.layca(0.1, alpha=0.5, layer_order=order)
    with pytest.raises(ValueError, match="infer_stacked_axes"):
        tx.update(params, tx.init(params), params)


@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_fan_in_and_muon_from_the_contraction(gpt):
    fn, params, tokens = gpt
    fan_in = _flat(layca_optax.infer_fan_in_axes(fn, params, tokens))
    assert fan_in["blocks/attn/query/kernel"] == (1,)  # not (1, 2): heads
    assert fan_in["blocks/attn/out/kernel"] == (1, 2)
    assert fan_in["blocks/up/kernel"] == (1,) and fan_in["head/kernel"] == (0,)
    numbers = layca_optax.infer_muon_dimension_numbers(fn, params, tokens)
    flat = _flat(params)
    names = ["query", "out"]
    kernels = {  # the layers, as Layca gives them to its base
        "blocks": {"attn": {n: {"kernel": None} for n in names}},
        "head": {"kernel": flat["head/kernel"]},
    }
    for n in names:
        kernels["blocks"]["attn"][n]["kernel"] = flat[f"blocks/attn/{n}/kernel"]
    dims = _flat(
        jax.tree.map(
            lambda d: (d.reduction_axis, d.output_axis),
            numbers(kernels),
            is_leaf=lambda d: isinstance(d, optax.contrib.MuonDimensionNumbers),
        )
    )
    # A D x (H * HD) matrix per block, not (D * H) x HD.
    assert dims["blocks/attn/query/kernel"] == ((1,), (2, 3))
    assert dims["blocks/attn/out/kernel"] == ((1, 2), (3,))
    assert dims["head/kernel"] == ((0,), (1,))
    with pytest.raises(ValueError, match=r"blocks/attn/out/bias.*matrix"):
        numbers(params)
    muon = optax.contrib.scale_by_muon(weight_dimension_numbers=numbers)
    tx = layca_optax.layca(
        0.1,
        base=muon,
        axis=layca_optax.infer_stacked_axes(fn, params, tokens),
        other=optax.adam(1e-3),
    )
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert all(jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates))


def _moe(p, x):
    """Scanned blocks of stacked experts (L, E, d, f) and (L, E, f, d),
    each expert on its own dispatched tokens (E, capacity, d)."""

    def block(h, w):
        routed = h.reshape(3, -1, h.shape[-1])  # 3 experts, 2 tokens each
        up = jnp.einsum("ecd,edf->ecf", routed, w["up"])
        down = jnp.einsum("ecf,efd->ecd", jax.nn.relu(up), w["down"])
        return h + down.reshape(h.shape), None

    h, _ = jax.lax.scan(block, x @ p["embed"], p["experts"])
    return h @ p["head"]


@pytest.mark.parametrize("rule", ["inferred", "stacked_axes"])
@pytest.mark.slow  # 7 s on 2 cores: out of `make test-fast`
def test_stacked_experts(rule):
    k = iter(jax.random.split(jax.random.key(1), 5))
    params = {
        "embed": jax.random.normal(next(k), (6, 8)),
        "experts": {
            "up": jax.random.normal(next(k), (2, 3, 8, 16)),
            "down": jax.random.normal(next(k), (2, 3, 16, 8)),
        },
        "head": jax.random.normal(next(k), (8, 4)),
    }
    x = jax.random.normal(next(k), (6, 6))
    axes = layca_optax.infer_stacked_axes(_moe, params, x)
    assert axes["experts"] == {"up": (2, 3), "down": (2, 3)}
    order = layca_optax.forward_order(_moe, params, x, per_slice=True)
    ups = [f"experts/up/0/{e}" for e in range(3)]
    assert order[:4] == ["embed"] + ups
    assert order[4:7] == [f"experts/down/0/{e}" for e in range(3)]
    assert order[-1] == "head" and len(order) == 2 + 2 * 2 * 3
    if rule == "stacked_axes":
        axes = {
            "embed": None,
            "experts": layca_optax.stacked_axes(2),
            "head": None,
        }
    tx = layca_optax.layca(0.1, alpha=0.3, layer_order=order, axis=axes)
    grads = jax.grad(lambda p: jnp.sum(_moe(p, x) ** 2))(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    inferred = layca_optax.infer_stacked_axes(_moe, params, x)
    _check_turns(params, new, inferred, order, 0.1, 0.3)


class _LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.tanh(nn.DenseGeneral((2, 4))(x).reshape(x.shape)), None


class _LinenStack(nn.Module):
    @nn.compact
    def __call__(self, x):
        scan = nn.scan(
            _LinenBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=3,
            reverse=True,
        )
        x, _ = scan()(nn.Dense(8)(x), None)
        return nn.Dense(1)(x)


def test_linen_scan_reverse():
    model, x = _LinenStack(), jnp.ones((2, 5))
    params = model.init(jax.random.key(0), x)["params"]
    fn = lambda p, x: model.apply({"params": p}, x)
    axes = layca_optax.infer_stacked_axes(fn, params, x)
    assert axes["Scan_LinenBlock_0"]["DenseGeneral_0"]["kernel"] == (1, 2, 3)
    order = layca_optax.forward_order(fn, params, x, per_slice=True)
    stack = "Scan_LinenBlock_0/DenseGeneral_0/kernel"
    assert order == ["Dense_0/kernel"] + [f"{stack}/{i}" for i in (2, 1, 0)] + [
        "Dense_1/kernel"
    ]


def test_per_slice_depth_under_inject_hyperparams():
    """A traced alpha: the per-slice multipliers are arrays in the step."""
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "blocks": jax.random.normal(k1, (3, 4, 4)),
        "head": jax.random.normal(k2, (4, 2)),
    }

    def fn(p, x):
        step = lambda h, w: (jnp.tanh(h @ w), None)
        return jax.lax.scan(step, x, p["blocks"])[0] @ p["head"]

    x = jnp.ones((2, 4))
    order = layca_optax.forward_order(fn, params, x, per_slice=True)
    axis = layca_optax.infer_stacked_axes(fn, params, x)
    tx = optax.inject_hyperparams(
        layca_optax.layca, static_args=("layer_order", "axis")
    )(learning_rate=0.1, alpha=0.5, layer_order=order, axis=axis)
    grads = jax.grad(lambda p: jnp.sum(fn(p, x) ** 2))(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    _check_turns(params, new, axis, order, 0.1, 0.5)


def _pair_fori(p, x):
    def body(i, h):
        return jnp.tanh(jnp.tanh(h @ p["a"][i]) @ p["b"][i])

    return jax.lax.fori_loop(0, 3, body, x)


def _pair_remat(p, x):
    step = lambda h, w: (jnp.tanh(jnp.tanh(h @ w["a"]) @ w["b"]), None)
    return jax.lax.scan(jax.checkpoint(step), x, p)[0]


def _pair_nested(p, x):  # an outer scan over groups of blocks
    groups = jax.tree.map(lambda w: w.reshape(3, 1, 4, 4), p)
    step = lambda h, w: (jnp.tanh(jnp.tanh(h @ w["a"]) @ w["b"]), None)
    return jax.lax.scan(lambda h, w: jax.lax.scan(step, h, w), x, groups)[0]


@pytest.mark.parametrize("fn", [_pair_remat, _pair_nested, _pair_fori])
def test_depth_order_through_remat_nested_scans_and_loops(fn):
    params = {"a": jnp.ones((3, 4, 4)), "b": jnp.ones((3, 4, 4))}
    x = jnp.ones((2, 4))
    axes = layca_optax.infer_stacked_axes(fn, params, x)
    assert axes == {"a": (1, 2), "b": (1, 2)}
    if fn is _pair_fori:  # indexed by the loop counter: order unknown
        with pytest.warns(UserWarning, match=r"\['a', 'b'\] are indexed"):
            order = layca_optax.forward_order(fn, params, x, per_slice=True)
        assert order == ["a/0", "a/1", "a/2", "b/0", "b/1", "b/2"]
    else:
        order = layca_optax.forward_order(fn, params, x, per_slice=True)
        assert order == ["a/0", "b/0", "a/1", "b/1", "a/2", "b/2"]
