"""Layca data-parallel + FSDP: the demo CNN on MNIST-1D over all devices.

Every local device holds a slice of each batch (data parallelism) and a
slice of each kernel and of its optimizer state (FSDP: each kernel split
along its largest axis that the device count divides). The step is one
``jax.jit`` over global arrays; the compiler inserts the collectives, and
Layca's per-layer norms cost a few all-reduced scalars per layer. The same
code runs on one device; ``--compare`` trains both ways and prints how far
the loss curves are apart.

On CPU, try it with eight virtual devices::

    python -m layca_optax.experiments.sharded --cpu-devices 8 --compare

See ``docs/multihost.md`` for TPU pods and GPU clusters.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import layca_optax
from layca_optax.experiments import CNN, Dataset, load_mnist1d, step_decay


def make_step(model: nn.Module, tx: optax.GradientTransformation) -> Any:
    """One training step on a global batch (sharded or not)."""

    def loss_fn(params, batch_stats, x, y):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = model.apply(
            variables, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.mean(loss), updates["batch_stats"]

    def step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, y
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            batch_stats,
            opt_state,
            loss,
        )

    return step


def train(
    epochs: int = 5,
    *,
    devices: Sequence[Any] | None = None,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    batch_size: int = 128,
    learning_rate: float = 3**-3,
    max_steps: int | None = None,
    seed: int = 0,
    perturb: float = 0.0,
    variables: Any = None,
) -> dict[str, Any]:
    """Trains ``model`` with Layca, data-parallel + FSDP over ``devices``.

    Args:
      epochs: passes over the training set.
      devices: the devices of the mesh; default all local devices.
      model: default the demo's :class:`~layca_optax.experiments.CNN`.
      data: default MNIST-1D (:func:`~layca_optax.experiments.load_mnist1d`).
      batch_size: the global batch; the device count must divide it.
      learning_rate: Layca's initial rate, step-decayed (x0.2 at 80% and
        90% of the run).
      max_steps: stop after this many steps (for quick checks).
      seed: the seed of the initialization and of the shuffling.
      perturb: multiply each initial weight by ``1 + perturb * z``, ``z``
        standard normal: a baseline for how far rounding-sized differences
        carry (``--compare``).
      variables: the model's initial variables; default ``model.init``
        with ``seed``.

    Returns:
      ``{"loss": per-step losses, "test_accuracy": per epoch,
      "rotation": {layer: cosine distance to init} at the end, "devices",
      "seconds"}``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batch_size % len(devices):
        raise ValueError(
            f"`train(batch_size={batch_size})` must be a multiple of the "
            f"{len(devices)} devices."
        )
    model = CNN() if model is None else model
    data = load_mnist1d() if data is None else data
    steps = epochs * (len(data.x_train) // batch_size)
    steps = steps if max_steps is None else min(steps, max_steps)
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))  # split the batch dimension

    if variables is None:
        variables = _init_variables(model, seed, data.x_train[:1])
    init = dict(jax.device_get(variables))  # host copies: params are donated
    if perturb:
        noise = np.random.default_rng(seed + 1)
        init["params"] = jax.tree.map(
            lambda w: (
                w * (1 + perturb * noise.standard_normal(w.shape))
            ).astype(w.dtype),
            init["params"],
        )
    param_sharding = layca_optax.param_shardings(
        init["params"], mesh, fsdp="data"
    )
    params = jax.device_put(init["params"], param_sharding)
    batch_stats = jax.device_put(init["batch_stats"], replicated)
    tx = layca_optax.layca(step_decay(learning_rate, steps))
    state_sharding = layca_optax.state_shardings(tx, params)
    opt_state = jax.jit(tx.init, out_shardings=state_sharding)(params)
    stats_sharding = jax.tree.map(lambda _: replicated, batch_stats)
    step = jax.jit(
        make_step(model, tx),
        out_shardings=(
            param_sharding,
            stats_sharding,
            state_sharding,
            replicated,
        ),
        donate_argnums=(0, 1, 2),
    )

    @jax.jit
    def predict(params, batch_stats, x):
        variables = {"params": params, "batch_stats": batch_stats}
        logits: Any = model.apply(variables, x, train=False)
        return jnp.argmax(logits, -1)

    rng = np.random.default_rng(seed)
    losses: list[jax.Array] = []
    accuracies: list[float] = []
    start = time.perf_counter()
    while len(losses) < steps:
        order = rng.permutation(len(data.x_train))
        for i in range(len(data.x_train) // batch_size):
            if len(losses) == steps:
                break
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y = jax.device_put((data.x_train[idx], data.y_train[idx]), batch)
            params, batch_stats, opt_state, loss = step(
                params, batch_stats, opt_state, x, y
            )
            losses.append(loss)
        predicted = predict(params, batch_stats, data.x_test)
        accuracies.append(float(jnp.mean(predicted == data.y_test)))
    init_params = jax.device_put(init["params"], param_sharding)
    rotation = jax.jit(layca_optax.rotation_metrics)(params, init_params)
    return {
        "loss": np.asarray(jax.device_get(losses), np.float64),
        "test_accuracy": np.asarray(accuracies),
        "rotation": {k: float(v) for k, v in rotation.items()},
        "devices": len(devices),
        "seconds": time.perf_counter() - start,
    }


@functools.cache
def _jitted_init(model: nn.Module) -> Any:
    return jax.jit(lambda key, x: model.init(key, x, train=False))


def _init_variables(model: nn.Module, seed: int, sample: Any) -> Any:
    """The model's variables for ``seed`` (one compiled call per model)."""
    return _jitted_init(model)(jax.random.key(seed), jnp.asarray(sample))


def _summary(name: str, run: dict[str, Any]) -> str:
    loss = run["loss"]
    return (
        f"{name}: {run['devices']} device(s), {len(loss)} steps, loss "
        f"{loss[0]:.4f} -> {loss[-1]:.4f}, test accuracy "
        f"{run['test_accuracy'][-1]:.3f}, {run['seconds']:.1f} s"
    )


def _gap(run: dict[str, Any], reference: dict[str, Any]) -> str:
    """How far two loss curves are apart, step by step and per epoch."""
    a, b = run["loss"], reference["loss"]
    gap = np.abs(a - b) / np.abs(b)
    same = int(np.argmax(gap > 1e-5)) if np.any(gap > 1e-5) else len(gap)
    epochs = len(run["test_accuracy"])
    mean_a, mean_b = (np.mean(np.array_split(x, epochs), 1) for x in (a, b))
    epoch_gap = np.max(np.abs(mean_a - mean_b) / mean_b)
    return (
        f"per-step loss within 1e-5 relative for the first {same} steps "
        f"(max gap there {gap[:same].max(initial=0):.1e}), max gap "
        f"{gap.max():.1e}; per-epoch mean loss max gap {epoch_gap:.1e}; "
        f"final test accuracy {run['test_accuracy'][-1]:.3f} vs "
        f"{reference['test_accuracy'][-1]:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m layca_optax.experiments.sharded --help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="run on this many virtual CPU devices (set before JAX starts)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train on one device and compare the loss curves",
    )
    args = parser.parse_args(argv)
    devices = None
    if args.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
        devices = jax.devices("cpu")
    kwargs = dict(epochs=args.epochs, batch_size=args.batch_size)
    runs = {"sharded": train(devices=devices, seed=args.seed, **kwargs)}
    print(_summary("sharded", runs["sharded"]))
    if args.compare:
        one = (devices or jax.devices())[:1]
        runs["single"] = train(devices=one, seed=args.seed, **kwargs)
        runs["perturbed"] = train(
            devices=one, seed=args.seed, perturb=1e-7, **kwargs
        )
        print(_summary("single", runs["single"]))
        print(_summary("single, init x (1 + 1e-7 z)", runs["perturbed"]))
        for name in ("sharded", "perturbed"):
            print(f"{name} vs single: {_gap(runs[name], runs['single'])}")
    return runs


if __name__ == "__main__":
    main()
