"""Runs the reproduction's experiments: one training run per unit of work,
in this process or spread over worker processes (``--jobs``)."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import layca_optax
from layca_optax.experiments import _report
from layca_optax.experiments._experiments import (
    LAYCA_DEFAULT,
    Optimizer,
    experiments,
)
from layca_optax.experiments._settings import Settings
from layca_optax.experiments._workers import run_parallel
from layca_optax.experiments.data import (
    Dataset,
    DatasetError,
    load_cifar,
    load_digits,
    load_mnist,
    load_mnist1d,
    resolve_data_dir,
    take_per_class,
)
from layca_optax.experiments.models import C10CNN1, CNN, MLP, ResNet32
from layca_optax.experiments.training import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
    accuracy,
    train_sweep,
)


@dataclasses.dataclass(frozen=True)
class Task:
    """A model, its data and its schedule."""

    model: Any
    data: Dataset
    batch_size: int
    epochs: int
    decay_factor: float
    decay_at: tuple[float, ...]
    description: str


@functools.lru_cache(maxsize=4)
def cnn_task(settings: Settings) -> Task:
    """The CNN experiments' task (data loaded once per process).

    Raises:
      DatasetError: CIFAR files missing or malformed.
    """
    if settings.task == "mnist1d":
        return Task(
            CNN(), load_mnist1d(), BATCH_SIZE, settings.epochs,
            DECAY_FACTOR, DECAY_AT,
            "MNIST-1D (4,000 train / 1,000 test, generated), 1-D CNN: 4 "
            "conv + 1 dense kernels, BatchNorm without affine parameters",
        )  # fmt: skip
    classes = 10 if settings.task == "cifar10" else 100
    data = load_cifar(settings.data_dir, classes, standardize=True)
    model: Any
    if classes == 10:
        model, decay = C10CNN1(), (0.2, (0.8, 0.9, 0.97))
        name = "CIFAR-10, C10-CNN1 (25 kernel layers)"
    else:
        model, decay = ResNet32(num_classes=100), (0.1, (0.7, 0.9, 0.97))
        name = "CIFAR-100, ResNet-32 (34 kernel layers)"
    return Task(model, data, BATCH_SIZE, settings.epochs, *decay, name)


@functools.lru_cache(maxsize=4)
def mlp_task(settings: Settings) -> Task:
    """Section 6's MLP: on MNIST (1,000 per class, batch 2048) when the
    data folder (``--data-dir`` or ``$LAYCA_DATA_DIR``) holds its files,
    else on scikit-learn's 8x8 digits (1,438 train images, batch 256);
    ``x0.2`` at 90% of the run for every rate (the authors decay at 90% or
    95% depending on the rate, and not at all for 3^-4).
    """
    try:  # MNIST when present locally, else the bundled digits
        mnist = load_mnist(resolve_data_dir(settings.data_dir))
    except DatasetError:
        data, batch = load_digits(), 256
        name = "scikit-learn 8x8 digits (1,438 train / 359 test)"
    else:
        counts = np.bincount(mnist.y_train, minlength=mnist.num_classes)
        if counts.min() >= 1000:  # the paper's subset
            data = take_per_class(mnist, 1000)
            name = "MNIST (1,000 train images per class)"
        else:  # a small local file: all of it
            data = mnist
            name = f"MNIST ({len(data.x_train):,} train images)"
        batch = min(2048, len(data.x_train))
    return Task(
        MLP(), data, batch, settings.mlp_epochs, DECAY_FACTOR, (0.9,),
        f"{name}, MLP Dense(784)-BN-ReLU-Dense(10); biases and BN "
        "parameters frozen (Layca's default mask), as the authors' code",
    )  # fmt: skip


def check_data(settings: Settings) -> None:
    """Loads every dataset the run needs, so that a missing or corrupt file
    is reported before any training.

    Raises:
      DatasetError: naming the path and the expected format.
    """
    cnn_task(settings)
    if settings.data_dir is not None and settings.task == "mnist1d":
        load_mnist(settings.data_dir)  # the only use of --data-dir here
    mlp_task(settings)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One training run: an experiment's configuration and a seed."""

    experiment: str
    config: int
    seed: int


def units(settings: Settings) -> list[Unit]:
    """Every run of the reproduction, grouped by experiment and config."""
    return [
        Unit(e.name, i, seed)
        for e in experiments(settings.quick)
        for i in range(len(e.configs))
        for seed in settings.seeds
    ]


def _checkpoints(epochs: int) -> list[int]:
    """The reinit study's checkpoints: init (0), epochs 1, 2 and quarters."""
    marks = {0, 1, 2, epochs // 4, epochs // 2, epochs}
    return sorted(m for m in marks if m <= epochs)


def _reinit(task: Task, result: Any, seed: int, draws: int) -> dict:
    """Zhang et al.'s re-initialization robustness of one trained run."""
    model, data = task.model, task.data
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    batch_stats = result.batch_stats

    def test_accuracy(params):
        return accuracy(model, params, batch_stats, x, y)

    marks = _checkpoints(task.epochs)
    checkpoints = [result.init_params] + [
        jax.tree.map(lambda a, m=m: a[m - 1], result.snapshots)
        for m in marks[1:]
    ]
    found = layca_optax.reinit_robustness(
        test_accuracy,
        result.params,
        checkpoints,
        key=jax.random.key(seed),
        layers=list(model.layer_names),
        num_draws=draws,
        batch="map",
        checkpoint_labels=["init", *map(str, marks[1:])],
    )
    return {
        "paths": list(found.paths),
        "checkpoint_labels": list(found.checkpoint_labels),
        "baseline": float(found.baseline),
        "reinit": np.asarray(found.reinit).tolist(),
        "rerandom": np.asarray(found.rerandom).tolist(),
    }


def run_unit(settings: Settings, unit: Unit) -> dict[str, Any]:
    """Trains one run; returns its ``results.json`` entry.

    The entry is :func:`~layca_optax.experiments._report.summary`'s, with the
    seed, plus ``"reinit"`` for the runs the reinit study probes (Layca's
    default on the CNN, the first rate on the MLP) and ``"features"`` (the
    first 16 hidden units' input weights as images) for the MLP's runs.
    """
    experiment = {e.name: e for e in experiments(settings.quick)}[
        unit.experiment
    ]
    config = experiment.configs[unit.config]
    task = (
        mlp_task(settings) if experiment.task == "mlp" else cnn_task(settings)
    )
    probed = config == LAYCA_DEFAULT or (
        experiment.task == "mlp" and unit.config == 0
    )
    small = settings.task == "mnist1d" or experiment.task == "mlp"
    result = train_sweep(
        Optimizer(config.kind, tuple(task.model.layer_names)),
        task.data,
        task.epochs,
        [unit.seed],
        {k: [v] for k, v in config.hparams.items()},
        model=task.model,
        batch_size=task.batch_size,
        decay_factor=task.decay_factor,
        decay_at=task.decay_at,
        keep_params=probed or small,  # small: one compile per family
    )[0]
    entry = {"seed": unit.seed, **_report.summary(result)}
    if probed:
        entry["reinit"] = _reinit(
            task, result, unit.seed, settings.reinit_draws
        )
    if experiment.task == "mlp":
        kernel = np.asarray(result.params["dense0"]["kernel"])
        shape = task.data.x_train.shape[1:3]
        images = kernel[:, :16].T.reshape(16, *shape)
        entry["features"] = np.round(images, 5).tolist()
    return entry


def run_all(
    settings: Settings,
    jobs: int = 1,
    on_done: Callable[[Unit, dict[str, Any]], None] | None = None,
) -> Iterator[tuple[Unit, dict[str, Any]]]:
    """Runs every unit; yields ``(unit, entry)`` in the units' order.

    Args:
      settings: what to train.
      jobs: worker processes (1: in this process). Each worker compiles
        the optimizer families it meets; results do not depend on ``jobs``.
        If the caller stops (``KeyboardInterrupt``, or the iteration
        closed early), the workers are killed at once (see
        :func:`~layca_optax.experiments._workers.run_parallel`).
      on_done: called with each finished unit as soon as it finishes.
    """
    todo = units(settings)
    if jobs <= 1:
        for unit in todo:
            entry = run_unit(settings, unit)
            if on_done is not None:
                on_done(unit, entry)
            yield unit, entry
        return
    yield from run_parallel(
        functools.partial(run_unit, settings), todo, jobs, on_done
    )


def describe(settings: Settings) -> dict[str, Any]:
    """The settings block of ``results.json``."""
    cnn, mlp = cnn_task(settings), mlp_task(settings)

    def block(task: Task) -> dict[str, Any]:
        return {
            "description": task.description,
            "layers": list(task.model.layer_names),
            "n_train": len(task.data.x_train),
            "n_test": len(task.data.x_test),
            "epochs": task.epochs,
            "batch_size": task.batch_size,
            "decay_factor": task.decay_factor,
            "decay_at": list(task.decay_at),
        }

    return {
        "task": settings.task,
        "seeds": list(settings.seeds),
        "quick": settings.quick,
        "cnn": block(cnn),
        "mlp": block(mlp),
        "layca_optax_version": layca_optax.__version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
