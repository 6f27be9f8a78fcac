"""Issue 23, item 5: NNX states in `tracked_metrics`, and `scalar_metrics`.

`tracked_metrics` reads a real `nnx.Optimizer` trained under `nnx.jit`,
`nnx.state` of it and its pure forms (where the state's NamedTuples are
mappings); `scalar_metrics` flattens metric dicts (arrays per stacked
layer, nested dicts, NNX states) into `{name: float}` with the per-slice
names of `rotation_metrics`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import layca_optax


LR = 0.05


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 8, rngs=rngs)
        self.b = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x)))


@nnx.jit
def _step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)
    return layca_optax.tracked_metrics(optimizer)


@pytest.fixture(scope="module")
def trained():
    model = MLP(nnx.Rngs(0))
    tx = optax.chain(
        layca_optax.layca(LR, other=optax.sgd(0.1)),
        layca_optax.track_rotation(reference="exact"),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = jnp.sin(x[:, :2])
    for _ in range(3):
        in_step = _step(model, optimizer, x, y)
    return optimizer, in_step


def _pure_forms(optimizer):
    state = nnx.state(optimizer)
    forms = {
        "optimizer": optimizer,
        "state": state,
        "to_pure_dict": nnx.to_pure_dict(state),
        "as_pure": nnx.as_pure(state),
    }
    return forms


def test_tracked_metrics_reads_every_nnx_form(trained):
    optimizer, in_step = trained
    kernels = ["a/kernel", "b/kernel"]
    expected = [
        f"track/{m}/{k}"
        for m in ("rate", "radial_ratio", "norm", "cosine")
        for k in kernels
    ]
    assert sorted(in_step) == sorted(expected)  # returned by nnx.jit
    for name, form in _pure_forms(optimizer).items():
        metrics = layca_optax.tracked_metrics(form)
        assert list(metrics) == expected, name
        for key in expected:
            np.testing.assert_array_equal(metrics[key], in_step[key], key)
    for k in kernels:  # Layca turns each kernel by arctan(LR) a step
        np.testing.assert_allclose(in_step[f"track/rate/{k}"], LR, rtol=1e-5)
        assert 0 < float(in_step[f"track/cosine/{k}"]) < 0.1
    assert int(optimizer.step[...]) == 3  # NNX's own step count


def test_tracked_metrics_errors_name_the_cause(trained):
    optimizer, _ = trained
    model = MLP(nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"tracked_metrics\(state=...\)` holds no track_rotation\(\) "
        r"state \(got a State",
    ):
        layca_optax.tracked_metrics(nnx.state(model, nnx.Param))
    twice = [nnx.state(optimizer), nnx.to_pure_dict(nnx.state(optimizer))]
    with pytest.raises(ValueError, match=r"holds 2 track_rotation\(\) states"):
        layca_optax.tracked_metrics(twice)


def test_scalar_metrics_of_nnx_metrics_and_states(trained):
    optimizer, in_step = trained
    scalars = layca_optax.scalar_metrics(in_step, prefix="train/")
    assert list(scalars) == [f"train/{k}" for k in in_step]
    assert all(type(v) is float for v in scalars.values())
    assert scalars["train/track/rate/a/kernel"] == float(
        in_step["track/rate/a/kernel"]
    )
    # An nnx.State of Variables: the boxes add no name.
    params = nnx.state(MLP(nnx.Rngs(0)), nnx.Param)
    names = list(layca_optax.scalar_metrics({"p": params}))
    assert names[:2] == ["p/a/bias/0", "p/a/bias/1"]
    assert "p/b/kernel/7/1" in names and len(names) == 8 + 24 + 2 + 16


@pytest.mark.slow  # 5 s on 2 cores: out of `make test-fast`
def test_scalar_metrics_names_slices_as_rotation_metrics():
    """Stacked leaves: `tracked_metrics` keeps arrays, `rotation_metrics`
    gives scalars per slice; flattened, both have the same names."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {
        "h": {"kernel": jax.random.normal(k1, (3, 4, 4))},
        "moe": {"kernel": jax.random.normal(k2, (2, 2, 4, 4))},
        "out": {"kernel": jax.random.normal(k3, (4, 2))},
    }
    axis = (-2, -1)
    tx = optax.chain(
        optax.sgd(0.1), layca_optax.track_rotation(axis=axis, reference="exact")
    )
    grads = jax.tree.map(jnp.cos, params)
    updates, state = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    tracked = layca_optax.tracked_metrics(state, prefix="")
    assert tracked["cosine/moe/kernel"].shape == (2, 2)
    rotation = layca_optax.rotation_metrics(new, params, axis=axis, prefix="")
    flat = layca_optax.scalar_metrics(tracked)
    cosine = {
        k.removeprefix("cosine/"): v
        for k, v in flat.items()
        if k.startswith("cosine/")
    }
    assert list(cosine) == list(rotation)  # h/kernel/0 ... moe/kernel/1/1
    assert "moe/kernel/1/0" in cosine and "out/kernel" in cosine
    for key, value in rotation.items():
        np.testing.assert_allclose(cosine[key], value, rtol=1e-4, atol=1e-7)
    assert layca_optax.scalar_metrics(rotation) == {
        k: float(v) for k, v in rotation.items()
    }
    # RotationHistory splits arrays into the same names.
    history = layca_optax.RotationHistory()
    history.append(1, tracked)
    assert history.keys == tuple(flat)


def test_scalar_metrics_nesting_order_and_empty_nodes():
    metrics = {
        "z": 1,
        "a": {"b": (np.float32(0.5), True), "c": None},
        "m": optax.MaskedNode(),
        "bf16": jnp.bfloat16(0.25),
    }
    assert layca_optax.scalar_metrics(metrics) == {
        "z": 1.0,
        "a/b/0": 0.5,
        "a/b/1": 1.0,
        "bf16": 0.25,
    }
    assert list(layca_optax.scalar_metrics({"b": 1, "a": 2})) == ["b", "a"]
    assert layca_optax.scalar_metrics({"nan": np.nan})["nan"] != 0  # kept


@pytest.mark.parametrize(
    ("metrics", "kwargs", "match"),
    [
        ([1.0], {}, r"metrics=...\)` must be a mapping .* got a list"),
        ({"a": "x"}, {}, r"metrics=...\)`: the value at 'a' must be a real"),
        ({"a": {"b": 1j}}, {}, r"the value at 'a/b' must be a real"),
        ({"a": np.ones(2), "a/0": 1.0}, {}, r"metrics=...\)` names 'a/0' tw"),
        ({"a": 1.0}, {"prefix": 3}, r"prefix=...\)` must be a str"),
    ],
)
def test_scalar_metrics_errors(metrics, kwargs, match):
    """Each names the function and the argument, then says what is wrong."""
    with pytest.raises(ValueError, match=r"^`scalar_metrics\((\w+)=...\)`"):
        layca_optax.scalar_metrics(metrics, **kwargs)
    with pytest.raises(ValueError, match=match):
        layca_optax.scalar_metrics(metrics, **kwargs)


def test_scalar_metrics_refuses_traced_values():
    with pytest.raises(
        ValueError, match=r"the value at 'loss' is traced .* on the host"
    ):
        jax.jit(lambda x: layca_optax.scalar_metrics({"loss": x}))(1.0)
