"""Per-slice monitoring of scanned and MoE models, end to end.

A scanned Flax NNX model (``nnx.vmap`` to build, ``nnx.scan`` to apply:
``(L, d, d)`` kernels) and a plain dict with ``(L, E, d_in, d_out)``
experts, monitored per stacked layer and expert as a user would: values
against NumPy, logged, saved, loaded and plotted. (Their misuse: the
``TestMisuse`` classes of test_metrics.py and test_history_plots.py, and
test_tracking_misuse.py.)
"""

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
from flax import nnx

import layca_optax


matplotlib.use("Agg")

L, E, D = 3, 2, 4
STACKED = (-2, -1)  # one norm per stacked layer (and expert)
as_pure = getattr(nnx, "as_pure", None) or nnx.pure  # flax 0.12.0


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def tangent(new, old):
    new, old = (
        np.ravel(new).astype(np.float64),
        np.ravel(old).astype(np.float64),
    )
    along = new @ old / np.linalg.norm(old)
    across = np.linalg.norm(new - along * old / np.linalg.norm(old))
    return across / along


class Block(nnx.Module):
    def __init__(self, rngs):
        self.mlp = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, x):
        return x + jnp.tanh(self.mlp(x))


class Scanned(nnx.Module):
    """Input ``z_in``, ``L`` scanned blocks ``h``, output ``a_out``: the
    names sort against the forward order."""

    def __init__(self, rngs):
        self.z_in = nnx.Linear(3, D, rngs=rngs)

        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return Block(rngs)

        self.h = blocks(rngs)
        self.a_out = nnx.Linear(D, 2, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.a_out(body(self.z_in(x), self.h))


@functools.cache
def scanned_run():
    """AdamW on the scanned model, tracked per stacked layer: the initial
    and final params, the forward order and a per-epoch history."""
    model = Scanned(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = jnp.sin(x[:, :2])
    # One entry per leaf (the stacked kernel at its first use): the order
    # a leaf path stands for in `layer_order`; forward_order says the leaf
    # is stacked (per_slice=True would list its slices).
    with pytest.warns(UserWarning, match=r"\['h/mlp/kernel'\] are stacked"):
        order = layca_optax.forward_order(
            lambda p, r, x: nnx.merge(graphdef, p, r)(x), params, rest, x
        )
    params = as_pure(params)
    tx = optax.chain(
        optax.adamw(1e-3),
        layca_optax.track_rotation(axis=STACKED, reference="exact"),
    )

    @jax.jit
    def step(p, state):
        loss = lambda p: jnp.mean((nnx.merge(graphdef, p, rest)(x) - y) ** 2)
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    metrics = jax.jit(
        functools.partial(layca_optax.rotation_metrics, axis=STACKED)
    )
    init, state = params, tx.init(params)
    history = layca_optax.RotationHistory()
    for epoch in range(1, 4):
        for _ in range(5):
            params, state = step(params, state)
        history.append(
            epoch,
            metrics(params, init) | layca_optax.tracked_metrics(state),
        )
    return init, params, order, history


@pytest.mark.slow  # 4 s on 2 cores: out of `make test-fast`
def test_scanned_nnx_model_per_stacked_layer_against_numpy():
    init, params, order, _ = scanned_run()
    assert order == ["z_in/kernel", "h/mlp/kernel", "a_out/kernel"]
    got = layca_optax.rotation_metrics(params, init, axis=STACKED)
    stacked = [f"rotation/h/mlp/kernel/{i}" for i in range(L)]
    assert list(got) == [
        "rotation/a_out/kernel",
        *stacked,
        "rotation/z_in/kernel",
    ]
    assert all(v.shape == () and v.dtype == jnp.float32 for v in got.values())
    w, w0 = params["h"]["mlp"]["kernel"], init["h"]["mlp"]["kernel"]
    for i in range(L):
        np.testing.assert_allclose(
            got[f"rotation/h/mlp/kernel/{i}"], cosine(w[i], w0[i]), rtol=2e-3
        )
    np.testing.assert_allclose(
        got["rotation/z_in/kernel"],
        cosine(params["z_in"]["kernel"], init["z_in"]["kernel"]),
        rtol=2e-3,
    )
    tree = layca_optax.layer_rotation(params, init, axis=STACKED)
    assert tree["h"]["mlp"]["kernel"].shape == (L,)  # not keepdims (L, 1, 1)
    assert tree["z_in"]["kernel"].shape == ()


def moe_params(seed):
    rng = np.random.default_rng(seed)
    return {
        "h": {"mlp": {"kernel": rng.normal(size=(L, D, D))}},
        "moe": {"experts": rng.normal(size=(L, E, D, 2 * D))},
        "head": {"kernel": rng.normal(size=(D, 2))},
    }


@pytest.mark.slow  # 3 s on 2 cores: out of `make test-fast`
def test_moe_per_expert_metrics_rates_and_tracking_against_numpy():
    old = moe_params(0)
    new = jax.tree.map(
        lambda a, b: a + 0.3 * b, old, moe_params(1)
    )  # a few degrees to tens of degrees per slice
    # A per-leaf rule by path: per layer and expert for the stacked leaves.
    rule = lambda path, leaf: (
        STACKED if path.startswith(("h/", "moe/")) else None
    )
    with jax.enable_x64(True):
        got = jax.jit(
            functools.partial(layca_optax.rotation_metrics, axis=rule)
        )(new, old)
        rate = layca_optax.rotation_rate(new, old, axis=rule)
    experts = [
        f"rotation/moe/experts/{i}/{j}" for i in range(L) for j in range(E)
    ]
    stacked = [f"rotation/h/mlp/kernel/{i}" for i in range(L)]
    assert list(got) == [*stacked, "rotation/head/kernel", *experts]
    assert rate["moe"]["experts"].shape == (L, E)
    assert rate["h"]["mlp"]["kernel"].shape == (L,)
    for i, j in np.ndindex(L, E):
        a, b = new["moe"]["experts"][i, j], old["moe"]["experts"][i, j]
        np.testing.assert_allclose(
            got[f"rotation/moe/experts/{i}/{j}"], cosine(a, b), rtol=1e-9
        )
        np.testing.assert_allclose(
            rate["moe"]["experts"][i, j], tangent(a, b), rtol=1e-9
        )
    # In the optimizer state, the same values under the same names.
    tx = layca_optax.track_rotation(axis=rule, reference="exact")
    f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), old)
    updates = jax.tree.map(
        lambda a, b: jnp.asarray(a - b, jnp.float32), new, old
    )
    _, state = jax.jit(tx.update)(updates, tx.init(f32), f32)
    tracked = layca_optax.tracked_metrics(state)
    history = layca_optax.RotationHistory()
    history.append(0, jax.device_get(tracked))
    slices = [("moe/experts", (i, j)) for i, j in np.ndindex(L, E)]
    slices += [("h/mlp/kernel", (i,)) for i in range(L)]
    for leaf, index in slices:
        a, b = (
            functools.reduce(dict.get, leaf.split("/"), tree)[index]
            for tree in (new, old)
        )
        # Arrays in the step (no per-slice slicing under jit)...
        np.testing.assert_allclose(
            tracked[f"track/rate/{leaf}"][index], tangent(a, b), rtol=1e-4
        )
        # ...split into per-slice scalars on the host.
        name = leaf + "".join(f"/{i}" for i in index)
        np.testing.assert_allclose(
            history.as_array(f"track/cosine/{name}")[0],
            cosine(a, b),
            rtol=1e-4,
        )
    assert all(np.ndim(v) <= 2 for v in tracked.values())  # split on host


def test_per_slice_history_json_round_trip_and_plot(tmp_path):
    _, _, order, history = scanned_run()
    assert "track/cosine/h/mlp/kernel/2" in history.keys
    history.save_json(tmp_path / "run.json")
    loaded = layca_optax.RotationHistory.load_json(tmp_path / "run.json")
    assert loaded.keys == history.keys
    for key in history.keys:
        np.testing.assert_array_equal(
            loaded.as_array(key), history.as_array(key)
        )
    # Arrays append too, split with the same names.
    again = layca_optax.RotationHistory()
    stacked = np.stack(
        [history.as_array(f"rotation/h/mlp/kernel/{i}") for i in range(L)], 1
    )
    for step, row in zip(history.steps, stacked, strict=True):
        again.append(int(step), {"rotation/h/mlp/kernel": row})
    assert again.keys == tuple(f"rotation/h/mlp/kernel/{i}" for i in range(L))
    # AdamW for 15 steps: small distances, a y-axis fitted to them.
    fig = layca_optax.plot_rotation_curves(loaded, layer_order=order)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    slices = [f"h/mlp/kernel/{i}" for i in range(L)]
    assert labels == ["z_in/kernel", *slices, "a_out/kernel"]
    assert ax.get_legend_handles_labels()[1] == labels
    top = max(
        loaded.as_array(k).max()
        for k in loaded.keys
        if k.startswith("rotation/")
    )
    assert top < 0.5
    np.testing.assert_allclose(ax.get_ylim(), (0, 1.1 * top))
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        "First layer",
        "Last layer",
    ]
    fig = layca_optax.plot_rotation_curves(loaded, ylim=(0, 1))
    assert fig.axes[0].get_ylim() == (0, 1)
    fig = layca_optax.plot_rotation_rates(
        loaded, layers=["h/mlp/kernel"], layer_order=order
    )
    assert [line.get_label() for line in fig.axes[0].get_lines()] == slices
    fig.savefig(os.devnull, format="png")


def test_plots_use_natural_order_without_a_forward_order():
    history = layca_optax.RotationHistory()
    names = ["dense10", "dense2", "dense1", "h/kernel/10", "h/kernel/2"]
    for step in (1, 2):
        history.append(step, {f"rotation/{n}": 0.01 * step for n in names})
    fig = layca_optax.plot_rotation_curves(history)
    assert fig.axes[0].get_legend_handles_labels()[1] == [
        "dense1",
        "dense2",
        "dense10",
        "h/kernel/2",
        "h/kernel/10",
    ]
    assert (
        fig.axes[0].get_legend().get_title().get_text() == "Layer (name order)"
    )
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        "First name",
        "Last name",
    ]
    forward = ["dense10", "h/kernel", "dense2", "dense1"]
    fig = layca_optax.plot_rotation_curves(history, layer_order=forward)
    assert fig.axes[0].get_legend_handles_labels()[1] == [
        "dense10",
        "h/kernel/2",
        "h/kernel/10",
        "dense2",
        "dense1",
    ]
