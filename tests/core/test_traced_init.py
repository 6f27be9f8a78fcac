"""Issue 23, item 4: `base`'s checks run the same when `init` is traced.

A full optimizer as ``base`` (``optax.adam(1e-3)``) makes Layca turn the
layers uphill. The probe that catches it reads only the first layer's
shape and dtype, so it must raise the same ``ValueError`` for an eager
``init``, ``jax.jit(tx.init)``, ``jax.eval_shape(tx.init, ...)``, an
``nnx.Optimizer`` built inside ``nnx.jit`` or ``nnx.eval_shape`` (Flax's
sharded init) and ``optax.inject_hyperparams(layca)``; valid bases must
still initialize in all of them, with the probe run once per init (per
trace under a jit).
"""

import collections
import warnings

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import layca_optax


LR = 0.02
FULL = r"layca\(base=\.\.\.\)` got a full optimizer"
PARAMS = {
    "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)},
}


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x)))


def _nnx_jit(tx):
    """A model and its optimizer, built inside ``nnx.jit``."""

    @nnx.jit
    def create():
        model = MLP(nnx.Rngs(0))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    return create()


def _nnx_eval_shape(tx):
    return nnx.eval_shape(
        lambda: nnx.Optimizer(MLP(nnx.Rngs(0)), tx, wrt=nnx.Param)
    )


MODES = {
    "eager": lambda tx: tx.init(PARAMS),
    "jit": lambda tx: jax.jit(tx.init)(PARAMS),
    "eval_shape": lambda tx: jax.eval_shape(tx.init, PARAMS),
    "nnx.jit": lambda tx: _nnx_jit(tx)[1],
    "nnx.eval_shape": _nnx_eval_shape,
}
ALL_MODES = pytest.mark.parametrize("mode", list(MODES))


def _init(tx, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the layer/other split's notice
        return MODES[mode](tx)


@ALL_MODES
@pytest.mark.parametrize(
    "make", [layca_optax.layca, layca_optax.hyperball, layca_optax.layca_lars]
)
def test_full_optimizer_raises_whatever_the_init(mode, make):
    tx = make(LR, base=optax.adam(1e-3), other=optax.sgd(0.1))
    name = make.__name__
    with pytest.raises(
        ValueError, match=rf"`{name}\(base=\.\.\.\)` got a full"
    ):
        _init(tx, mode)


@pytest.mark.parametrize("mode", ["eager", "jit", "eval_shape", "nnx.jit"])
def test_full_optimizer_raises_with_inject_hyperparams(mode):
    tx = optax.inject_hyperparams(layca_optax.layca)(
        learning_rate=LR, base=optax.adam(1e-3), other=optax.sgd(0.1)
    )
    with pytest.raises(ValueError, match=FULL):
        _init(tx, mode)


@pytest.mark.parametrize("mode", ["jit", "eval_shape", "nnx.jit"])
def test_muon_without_dimension_numbers_raises_traced(mode):
    tx = layca_optax.layca(
        LR, base=optax.contrib.scale_by_muon(), other=optax.sgd(0.1)
    )
    with pytest.raises(ValueError, match="muon_dimension_numbers"):
        _init(tx, mode)


VALID = {
    "scale_by_adam": lambda: optax.scale_by_adam(),
    "trace": lambda: optax.trace(0.9),
    "none": lambda: None,
    "scale_by_lion": lambda: optax.scale_by_lion(),
    "muon": lambda: optax.contrib.scale_by_muon(
        weight_dimension_numbers=layca_optax.muon_dimension_numbers()
    ),
}


@ALL_MODES
@pytest.mark.parametrize("base", list(VALID))
@pytest.mark.slow  # 7 s on 2 cores: out of `make test-fast`
def test_valid_bases_init_whatever_the_init(mode, base):
    tx = layca_optax.layca(LR, base=VALID[base](), other=optax.sgd(0.1))
    out = _init(tx, mode)
    if mode in ("eager", "jit", "eval_shape"):
        expected = jax.eval_shape(tx.init, PARAMS)
        got = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), out
        )
        assert jax.tree.structure(got) == jax.tree.structure(expected)
        assert jax.tree.leaves(got) == jax.tree.leaves(expected)
    else:
        assert isinstance(out, nnx.Optimizer)


def test_valid_base_trains_after_traced_init():
    """Downhill after an init inside nnx.jit (the issue's loss went up)."""
    tx = layca_optax.layca(
        0.05, base=optax.scale_by_adam(), other=optax.sgd(0.1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer = _nnx_jit(tx)
    x = jax.random.normal(jax.random.key(1), (32, 3))
    y = jnp.sin(x[:, :2])

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    first = float(step(model, optimizer))
    for _ in range(20):
        last = float(step(model, optimizer))
    assert last < first


def _counted(base, calls):
    """``base`` counting its calls by the first leaf's shape."""

    def init(params):
        calls["init", jax.tree.leaves(params)[0].shape] += 1
        return base.init(params)

    def update(updates, state, params=None):
        calls["update", jax.tree.leaves(updates)[0].shape] += 1
        return base.update(updates, state, params)

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("mode", ["eager", "jit", "nnx.jit"])
def test_probe_runs_once_per_init(mode):
    """One probe (init and two updates on the 2 x 2 stand-in) and one real
    init per init; a jitted init's second call reuses its trace."""
    calls: collections.Counter = collections.Counter()
    tx = layca_optax.layca(
        LR, base=_counted(optax.scale_by_adam(), calls), other=optax.sgd(0.1)
    )
    init = jax.jit(tx.init) if mode == "jit" else None
    for i in range(2):
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "nnx.jit":
                _nnx_jit(tx)
            else:
                (init or tx.init)(PARAMS)
        real = (3, 4)  # the first layer: Dense_0's kernel (a's for MLP)
        expected = {
            ("init", (2, 2)): 1,
            ("update", (2, 2)): 2,
            ("init", real): 1,
        }
        if mode == "jit" and i == 1:
            expected = {}  # cached trace: nothing runs
        assert dict(calls) == expected
