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
from layca_optax.experiments.common import runs
from layca_optax.experiments.common.workers import run_units
from layca_optax.experiments.reproduce import tasks
from layca_optax.experiments.reproduce.experiments import (
    LAYCA_DEFAULT,
    experiments,
)
from layca_optax.experiments.reproduce.optimizers import Optimizer
from layca_optax.experiments.reproduce.settings import Settings
from layca_optax.experiments.training import accuracy, call_cached, train_sweep


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


def _accuracy_fn(model: Any) -> Callable[..., Any]:
    """``accuracy`` of ``model``, jitted once per (hashable) model."""
    return call_cached(_jitted_accuracy, model)


@functools.lru_cache(maxsize=8)
def _jitted_accuracy(model: Any) -> Callable[..., Any]:
    return jax.jit(functools.partial(accuracy, model))


def _evaluate(
    task: tasks.Task, result: Any, data: tuple[Any, Any] | None
) -> float | None:
    """The trained model's accuracy on ``(x, y)`` (None: no such set)."""
    if data is None:
        return None
    acc = _accuracy_fn(task.model)
    x, y = (jnp.asarray(a) for a in data)
    return float(acc(result.params, result.batch_stats, x, y))


def _reset_accuracy(task: tasks.Task, result: Any) -> dict[str, float]:
    """Validation accuracy with one kernel reset to its initial value (the
    others trained), per kernel: the "init" column of Zhang et al.'s study
    at the cost of one evaluation per layer (no compilation per run)."""
    acc = _accuracy_fn(task.model)
    x, y = (jnp.asarray(a) for a in task.validation)
    flat, treedef = jax.tree_util.tree_flatten_with_path(result.params)
    init = jax.tree.leaves(result.init_params)
    paths = [layca_optax.path_str(p) for p, _ in flat]
    out = {}
    for layer in task.model.layer_names:
        i = paths.index(layer)
        leaves = [v for _, v in flat]
        leaves[i] = init[i]
        params = jax.tree.unflatten(treedef, leaves)
        out[layer] = float(acc(params, result.batch_stats, x, y))
    return out


def _reinit(task: tasks.Task, result: Any, seed: int, draws: int) -> dict:
    """Zhang et al.'s re-initialization robustness of one trained run, on
    the validation split."""
    model = task.model
    x, y = (jnp.asarray(a) for a in task.validation)
    batch_stats = result.batch_stats

    def validation_accuracy(params):
        return accuracy(model, params, batch_stats, x, y)

    marks = _checkpoints(task.epochs)
    checkpoints = [result.init_params] + [
        jax.tree.map(lambda a, m=m: a[m - 1], result.snapshots)
        for m in marks[1:]
    ]
    found = layca_optax.analysis.reinit_robustness(
        validation_accuracy,
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


def _train(task: tasks.Task, config: Any, seed: int, keep: bool) -> Any:
    """One run of ``config`` on ``task`` (its parameters after every epoch
    kept if ``keep``)."""
    return train_sweep(
        Optimizer(config.kind, tuple(task.model.layer_names)),
        task.data,
        task.epochs,
        [seed],
        {k: [v] for k, v in config.hparams.items()},
        model=task.model,
        batch_size=task.batch_size,
        decay_factor=task.decay_factor,
        decay_at=task.decay_at,
        keep_params=keep,
    )[0]


def run_unit(settings: Settings, unit: Unit) -> dict[str, Any]:
    """Trains one run; returns its ``results.json`` entry.

    The entry is :func:`~layca_optax.experiments.common.runs.summary`'s,
    with the seed; the final accuracies on the validation split
    (``"validation_accuracy"``) and on MNIST-1D's second test set
    (``"test2_accuracy"``, None for the other tasks); the validation
    accuracy with each kernel reset to its initial value
    (``"reset_accuracy"``); ``"reinit"`` (Zhang et al.'s study, on the
    validation split) for the runs it probes (Layca's default on the CNN,
    the first rate on the MLP); and ``"features"`` (the first 16 hidden
    units' input weights as images) for the MLP's runs.
    """
    experiment = {e.name: e for e in experiments(settings.quick)}[
        unit.experiment
    ]
    config = experiment.configs[unit.config]
    task = tasks.task(settings, experiment.task)
    probed = config == LAYCA_DEFAULT or (
        experiment.task == "mlp" and unit.config == 0
    )
    small = settings.task == "mnist1d" or experiment.task == "mlp"
    # small: one compile per family
    result = _train(task, config, unit.seed, probed or small)
    second = (
        tasks.second_test_set(settings) if experiment.task == "cnn" else None
    )
    entry = {"seed": unit.seed, **runs.summary(result)}
    for key, data in (("validation", task.validation), ("test2", second)):
        entry[f"{key}_accuracy"] = runs.finite(_evaluate(task, result, data))
    reset = _reset_accuracy(task, result)
    entry["reset_accuracy"] = {k: runs.finite(v) for k, v in reset.items()}
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
        :func:`~layca_optax.experiments.common.workers.run_units`).
      on_done: called with each finished unit as soon as it finishes.
    """
    fn = functools.partial(run_unit, settings)
    yield from run_units(fn, units(settings), jobs, on_done)


def _test2_block(settings: Settings) -> dict[str, int] | None:
    """The second test set's size and data seed (None: not MNIST-1D)."""
    if settings.task != "mnist1d":
        return None
    return {"n": tasks.TEST2_SIZE, "data_seed": tasks.TEST2_SEED}


def describe(settings: Settings) -> dict[str, Any]:
    """The settings block of ``results.json``."""
    cnn, mlp = tasks.cnn_task(settings), tasks.mlp_task(settings)

    def block(task: tasks.Task) -> dict[str, Any]:
        return {
            "description": task.description,
            "layers": list(task.model.layer_names),
            "n_train": len(task.data.x_train),
            "n_validation": len(task.validation[1]),
            "n_test": len(task.data.x_test),
            "epochs": task.epochs,
            "batch_size": task.batch_size,
            "decay_factor": task.decay_factor,
            "decay_at": list(task.decay_at),
        }

    return {
        "task": settings.task,
        "seeds": list(settings.seeds),
        "validation_seed": tasks.VALIDATION_SEED,
        "test2": _test2_block(settings),
        "quick": settings.quick,
        "cnn": block(cnn),
        "mlp": block(mlp),
        "layca_optax_version": layca_optax.__version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
