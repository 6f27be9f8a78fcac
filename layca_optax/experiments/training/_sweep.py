"""Training runs: :func:`train_sweep` (runs of one model that differ by
their seed and hyperparameters, one compiled run for the whole grid) and
:func:`train` (one run of a given optimizer)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax.experiments.common.caller import arg, caller, calling
from layca_optax.experiments.data import Dataset
from layca_optax.experiments.models import CNN
from layca_optax.experiments.training._compiled import (
    Build,
    Setup,
    compiled_run,
    reporting,
)
from layca_optax.experiments.training._results import (
    SweepResult,
    TrainResult,
)
from layca_optax.experiments.training._schedule import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
    steps_per_epoch,
)
from layca_optax.experiments.training._step import init_fn


def _check(data: Dataset, epochs: int, batch_size: int) -> None:
    """``ValueError`` naming the function called unless ``epochs >= 1``
    and ``data`` holds one batch."""
    if epochs < 1:
        raise ValueError(f"{arg('epochs')} must be >= 1, got {epochs}.")
    if steps_per_epoch(len(data.x_train), batch_size) < 1:
        raise ValueError(
            f"`{caller()}`: {len(data.x_train)} samples make no batch "
            f"of {batch_size}."
        )


def train_sweep(
    build: Build,
    data: Dataset,
    epochs: int,
    seeds: Sequence[int],
    hparams: Mapping[str, Sequence[float]] | None = None,
    *,
    model: nn.Module | None = None,
    batch_size: int = BATCH_SIZE,
    decay_factor: float = DECAY_FACTOR,
    decay_at: tuple[float, ...] = DECAY_AT,
    keep_params: bool = False,
    progress: Callable[[int], object] | None = None,
) -> SweepResult:
    """Trains ``len(seeds)`` runs of ``model``, each whole run in one jit.

    Run ``i`` starts from the initialization drawn with ``seeds[i]``, draws
    its minibatches of ``batch_size`` without replacement from a fresh
    permutation each epoch (also set by ``seeds[i]``; the last incomplete
    batch is dropped), and trains with ``build({k: hparams[k][i]}, decay)``
    where ``decay`` is the step-decay shape (:func:`step_decay` of 1.0 over
    the run's steps). The hyperparameters are arguments of the compiled
    run, so the whole grid compiles once (and the executable is cached for
    later sweeps of the same setup). The runs go one after the other: on
    CPU, ``jax.vmap`` over runs measured about twice slower per run than
    this (batched matmuls of small kernels). The layer rotations
    (:func:`layca_optax.rotation_metrics` against the initial parameters),
    the mean train loss and the test accuracy are recorded after every
    epoch. Deterministic: a run's result depends only on its seed, its
    values and the setup, not on the other runs of the sweep.

    Args:
      build: ``build(hparams, decay) -> optimizer`` (see :data:`Build`).
      data: the dataset.
      epochs: passes over the train set (at least 1).
      seeds: one seed per run.
      hparams: ``{name: one value per run}``, given to ``build`` as
        float32 scalars; default none.
      model: a Flax Linen module called as ``model(x, train=...)`` with a
        ``batch_stats`` collection and a ``layer_names`` property; default
        :class:`~layca_optax.experiments.models.CNN`.
      batch_size: minibatch size.
      decay_factor: the step decay's factor.
      decay_at: the step decay's boundaries, as fractions of the run.
      keep_params: also return every run's parameters after every epoch.
      progress: called with the number of epochs done in the sweep (1 to
        ``len(seeds) * epochs``) after each epoch, from the host while the
        sweep goes on.

    Returns:
      A :class:`SweepResult`.
    """
    hparams = dict(hparams or {})
    with calling("train_sweep"):  # the checks only: not the run
        _check(data, epochs, batch_size)
        for name, values in hparams.items():
            if len(values) != len(seeds):
                raise ValueError(
                    f"`{caller()}`: hparams[{name!r}] has "
                    f"{len(values)} values for {len(seeds)} seeds."
                )
    model = CNN() if model is None else model
    arrays = tuple(jnp.asarray(a) for a in data[:4])
    setup = Setup(
        model=model,
        build=build,
        hparam_names=tuple(hparams),
        epochs=epochs,
        batch_size=batch_size,
        decay=(decay_factor, tuple(decay_at)),
        keep_params=keep_params,
        data=tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays),
    )
    start = time.perf_counter()
    compiled = compiled_run(setup)
    compile_seconds = time.perf_counter() - start
    runs = []
    for i, seed in enumerate(seeds):
        run_hparams = {k: v[i] for k, v in hparams.items()}
        shifted = None if progress is None else _shifted(progress, i * epochs)
        runs.append(_run(compiled, model, arrays, run_hparams, seed, shifted))
    return _collect(runs, model, time.perf_counter() - start, compile_seconds)


def _run(
    compiled: Any,
    model: nn.Module,
    arrays: tuple[jax.Array, ...],
    hparams: Mapping[str, float],
    seed: int,
    progress: Callable[[int], object] | None,
) -> tuple[Any, ...]:
    """One run of the sweep: its outputs, then its initial parameters."""
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    variables = init_fn(model)(init_key, arrays[0][:1])
    args = (
        {k: jnp.float32(v) for k, v in hparams.items()},
        variables["params"],
        variables["batch_stats"],
    )
    with reporting(progress):
        outputs = compiled(*args, shuffle_key, *arrays)
        jax.block_until_ready(outputs)
        jax.effects_barrier()  # every epoch reported
    return (*outputs, variables["params"])


def _collect(
    runs: list[tuple[Any, ...]],
    model: nn.Module,
    seconds: float,
    compile_seconds: float,
) -> SweepResult:
    """The runs' outputs stacked along a leading axis."""
    params, batch_stats, train_accuracy, history, init_params = (
        jax.tree.map(lambda *a: np.stack(a), *part)
        for part in zip(*runs, strict=True)
    )
    losses, test_curve, rotations, *snapshots = history
    layers = getattr(model, "layer_names", tuple(rotations))
    return SweepResult(
        train_accuracy=train_accuracy,
        test_accuracy=test_curve[:, -1],
        rotation={name: rotations[name] for name in layers},
        train_loss=losses,
        test_accuracy_curve=test_curve,
        seconds=seconds,
        compile_seconds=compile_seconds,
        params=params,
        batch_stats=batch_stats,
        init_params=init_params,
        snapshots=snapshots[0] if snapshots else None,
    )


def _shifted(progress: Callable[[int], object], offset: int):
    """``progress`` counting the epochs of earlier runs too."""
    return lambda done: progress(offset + done)


@dataclasses.dataclass(frozen=True)
class _Given:
    """A ``build`` that returns a given optimizer (hashable by it)."""

    optimizer: optax.GradientTransformation

    def __call__(
        self, hparams: Mapping[str, jax.Array], decay: optax.Schedule
    ) -> optax.GradientTransformation:
        del hparams, decay
        return self.optimizer


def train(
    optimizer: optax.GradientTransformation,
    data: Dataset,
    epochs: int,
    seed: int,
    *,
    model: nn.Module | None = None,
    batch_size: int = BATCH_SIZE,
    keep_params: bool = False,
    progress: Callable[[int], object] | None = None,
) -> TrainResult:
    """Trains ``model`` on ``data`` with ``optimizer``, all epochs in one jit.

    The single-run case of :func:`train_sweep` (see there for the
    minibatches, the records and determinism). The compiled run is cached:
    training the same ``optimizer`` object and an equal ``model`` again for
    as many epochs (with any seed) reuses it.

    Args:
      optimizer: any optax transformation; its ``update`` gets ``params``.
        Build its schedule with :func:`step_decay` and
        ``epochs * steps_per_epoch(len(data.x_train), batch_size)`` steps.
      data: the dataset.
      epochs: number of passes over the train set (at least 1).
      seed: the seed of the initialization and of the shuffling.
      model: the network; default
        :class:`~layca_optax.experiments.models.CNN`.
      batch_size: minibatch size.
      keep_params: also return the parameters after every epoch.
      progress: called with the number of epochs done (1 to ``epochs``)
        after each epoch, from the host while the run goes on.

    Returns:
      A :class:`TrainResult`.
    """
    with calling("train"):  # the checks only: not the run
        _check(data, epochs, batch_size)
    sweep = train_sweep(
        _Given(optimizer),
        data,
        epochs,
        [seed],
        model=model,
        batch_size=batch_size,
        keep_params=keep_params,
        progress=progress,
    )
    return sweep[0]
