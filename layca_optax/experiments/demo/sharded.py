"""Layca data-parallel + FSDP: the demo CNN on MNIST-1D over all devices.

Every local device holds a slice of each batch (data parallelism) and a
slice of each kernel and of its optimizer state (FSDP: each kernel split
along its largest axis that the device count divides). The step is one
``jax.jit`` over global arrays; the compiler inserts the collectives, and
Layca's per-layer norms cost a few all-reduced scalars per layer. The same
code runs on one device; ``--compare`` trains both ways and prints how far
the loss curves are apart.

On CPU, try it with eight virtual devices::

    python -m layca_optax.experiments.demo.sharded --cpu-devices 8 --compare

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
from layca_optax.experiments.data import Dataset, load_mnist1d
from layca_optax.experiments.demo.settings import LAYCA_LEARNING_RATE
from layca_optax.experiments.models import CNN
from layca_optax.experiments.training import (
    BATCH_SIZE,
    init_fn,
    loss_and_stats,
    predict,
    step_decay,
)


def make_step(model: nn.Module, tx: optax.GradientTransformation) -> Any:
    """One training step on a global batch (sharded or not)."""
    grad_fn = jax.value_and_grad(
        functools.partial(loss_and_stats, model), has_aux=True
    )

    def step(params, batch_stats, opt_state, x, y):
        (loss, batch_stats), grads = grad_fn(params, batch_stats, x, y)
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
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LAYCA_LEARNING_RATE,
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
    if variables is None:
        key = jax.random.key(seed)
        variables = init_fn(model)(key, jnp.asarray(data.x_train[:1]))
    init = dict(jax.device_get(variables))  # host copies: params are donated
    if perturb:
        init["params"] = _perturbed(init["params"], perturb, seed + 1)
    mesh = Mesh(np.array(devices), ("data",))
    tx = layca_optax.layca(step_decay(learning_rate, steps))
    run = _Sharded(model, tx, mesh, init)
    start = time.perf_counter()
    losses, accuracies = run.fit(data, batch_size, steps, seed)
    rotation = run.rotation()
    return {
        "loss": np.asarray(jax.device_get(losses), np.float64),
        "test_accuracy": np.asarray(accuracies),
        "rotation": {k: float(v) for k, v in rotation.items()},
        "devices": len(devices),
        "seconds": time.perf_counter() - start,
    }


def _perturbed(params: Any, perturb: float, seed: int) -> Any:
    """Each weight times ``1 + perturb * z``, ``z`` standard normal."""
    noise = np.random.default_rng(seed)
    return jax.tree.map(
        lambda w: (w * (1 + perturb * noise.standard_normal(w.shape))).astype(
            w.dtype
        ),
        params,
    )


class _Sharded:
    """A model's parameters and optimizer state laid out over ``mesh``
    (kernels FSDP-split, BatchNorm statistics replicated), its jitted step
    and prediction."""

    def __init__(
        self,
        model: nn.Module,
        tx: optax.GradientTransformation,
        mesh: Mesh,
        init: dict[str, Any],
    ) -> None:
        replicated = NamedSharding(mesh, P())
        self.batch = NamedSharding(mesh, P("data"))  # split the batch
        self.param_sharding = layca_optax.sharding.param_shardings(
            init["params"], mesh, fsdp="data"
        )
        self.init_params = init["params"]
        self.params = jax.device_put(init["params"], self.param_sharding)
        self.batch_stats = jax.device_put(init["batch_stats"], replicated)
        state_sharding = layca_optax.sharding.state_shardings(tx, self.params)
        init_state = jax.jit(tx.init, out_shardings=state_sharding)
        self.opt_state = init_state(self.params)
        stats_sharding = jax.tree.map(lambda _: replicated, self.batch_stats)
        self.step = jax.jit(
            make_step(model, tx),
            out_shardings=(
                self.param_sharding,
                stats_sharding,
                state_sharding,
                replicated,
            ),
            donate_argnums=(0, 1, 2),
        )
        self.predict = jax.jit(functools.partial(predict, model))

    def fit(
        self, data: Dataset, batch_size: int, steps: int, seed: int
    ) -> tuple[list[jax.Array], list[float]]:
        """Trains ``steps`` steps on minibatches drawn without replacement
        (a permutation per epoch by ``seed``); the losses per step and the
        test accuracy after each (possibly partial) epoch."""
        rng = np.random.default_rng(seed)
        losses: list[jax.Array] = []
        accuracies: list[float] = []
        while len(losses) < steps:
            order = rng.permutation(len(data.x_train))
            for i in range(len(data.x_train) // batch_size):
                if len(losses) == steps:
                    break
                idx = order[i * batch_size : (i + 1) * batch_size]
                batch = (data.x_train[idx], data.y_train[idx])
                x, y = jax.device_put(batch, self.batch)
                self.params, self.batch_stats, self.opt_state, loss = self.step(
                    self.params, self.batch_stats, self.opt_state, x, y
                )
                losses.append(loss)
            predicted = self.predict(self.params, self.batch_stats, data.x_test)
            accuracies.append(float(jnp.mean(predicted == data.y_test)))
        return losses, accuracies

    def rotation(self) -> dict[str, jax.Array]:
        """Each layer's cosine distance to its initial weights."""
        init = jax.device_put(self.init_params, self.param_sharding)
        return jax.jit(layca_optax.rotation_metrics)(self.params, init)


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
    """Command line:
    ``python -m layca_optax.experiments.demo.sharded --help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
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
