"""The training loop: every epoch of a run inside one ``jax.jit``.

:func:`train_sweep` trains runs of one model that differ by their seed and
hyperparameters (arguments of the compiled run, so a grid compiles once),
all epochs under ``lax.scan``; :func:`train` is the single-run case.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax.experiments._datasets import Dataset
from layca_optax.experiments._models import CNN


BATCH_SIZE = 128
DECAY_FACTOR = 0.2
DECAY_AT = (0.8, 0.9)

Build = Callable[
    [Mapping[str, jax.Array], optax.Schedule], optax.GradientTransformation
]
"""``build(hparams, decay) -> optimizer``: called inside the compiled run
with one run's hyperparameters (traced scalars) and the step-decay shape
(``decay(0) == 1``); e.g. ``lambda hp, decay: optax.sgd(lambda s:
hp["learning_rate"] * decay(s))``. It must be hashable (a module-level
function) for the compiled run to be reused."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What one training run gives.

    Attributes:
      train_accuracy: final accuracy on the train set (running BN stats).
      test_accuracy: final accuracy on the test set.
      rotation: each layer's cosine distance to its initial weights at the
        end of every epoch, ``{path: array of shape (epochs,)}``, in
        forward order.
      train_loss: mean minibatch loss of every epoch, shape ``(epochs,)``.
      test_accuracy_curve: test accuracy after every epoch.
      seconds: wall time of the run (of the whole sweep it was part of),
        compilation included, the initialization excluded.
      compile_seconds: the part of ``seconds`` spent compiling (about 0
        when a compiled run was reused, see :func:`train_sweep`).
      params: the final parameters.
      batch_stats: the final BatchNorm running statistics.
      init_params: the initial parameters.
      snapshots: with ``keep_params``, the parameters at the end of every
        epoch (leaves with a leading ``epochs`` axis), else None.
    """

    train_accuracy: float
    test_accuracy: float
    rotation: dict[str, np.ndarray]
    train_loss: np.ndarray
    test_accuracy_curve: np.ndarray
    seconds: float
    compile_seconds: float
    params: Any = dataclasses.field(repr=False)
    batch_stats: Any = dataclasses.field(repr=False)
    init_params: Any = dataclasses.field(repr=False, default=None)
    snapshots: Any = dataclasses.field(repr=False, default=None)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`train_sweep` gives: :class:`TrainResult`'s fields with a
    leading axis of size ``R`` (the runs, in the order given).

    ``len(result)`` is ``R``; ``result[i]`` is the ``i``-th run as a
    :class:`TrainResult`. ``seconds`` and ``compile_seconds`` are the
    sweep's.
    """

    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    rotation: dict[str, np.ndarray]
    train_loss: np.ndarray
    test_accuracy_curve: np.ndarray
    seconds: float
    compile_seconds: float
    params: Any = dataclasses.field(repr=False)
    batch_stats: Any = dataclasses.field(repr=False)
    init_params: Any = dataclasses.field(repr=False)
    snapshots: Any = dataclasses.field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.test_accuracy)

    def __getitem__(self, i: int) -> TrainResult:
        def pick(tree: Any) -> Any:
            return None if tree is None else jax.tree.map(lambda a: a[i], tree)

        return TrainResult(
            train_accuracy=float(self.train_accuracy[i]),
            test_accuracy=float(self.test_accuracy[i]),
            rotation={k: v[i] for k, v in self.rotation.items()},
            train_loss=self.train_loss[i],
            test_accuracy_curve=self.test_accuracy_curve[i],
            seconds=self.seconds,
            compile_seconds=self.compile_seconds,
            params=pick(self.params),
            batch_stats=pick(self.batch_stats),
            init_params=pick(self.init_params),
            snapshots=pick(self.snapshots),
        )


def steps_per_epoch(n_train: int, batch_size: int = BATCH_SIZE) -> int:
    """Minibatches per epoch; the last incomplete one is dropped."""
    return n_train // batch_size


def step_decay(
    learning_rate: float,
    total_steps: int,
    *,
    factor: float = DECAY_FACTOR,
    at: tuple[float, ...] = DECAY_AT,
) -> optax.Schedule:
    """The paper's step decay: ``learning_rate`` times ``factor`` at each
    fraction ``at`` of ``total_steps``.

    Args:
      learning_rate: the initial learning rate.
      total_steps: the number of optimizer steps of the whole run.
      factor: the multiplicative decay at each boundary.
      at: the boundaries, as fractions of ``total_steps``.

    Returns:
      An ``optax.piecewise_constant_schedule``.

    Example:
      >>> schedule = step_decay(1.0, 100)
      >>> [round(float(schedule(s)), 6) for s in (0, 79, 80, 90)]
      [1.0, 1.0, 0.2, 0.04]
    """
    boundaries: dict[int, float] = {}
    for fraction in at:  # short runs may round two boundaries to one step
        step = max(1, round(fraction * total_steps))
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


# The progress hook of the run in flight: the compiled runs call
# ``_epoch_done`` (through ``jax.debug.callback``) after every epoch, and it
# forwards the epoch to the hook that :func:`train_sweep` installs.
# Compiled runs are cached and shared, so the hook cannot be baked in.
_hook_lock = threading.Lock()
_hooks: list[Callable[[int], object]] = []


def _epoch_done(epoch: Any) -> None:
    with _hook_lock:
        hooks = list(_hooks)
    for hook in hooks:
        hook(int(epoch) + 1)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """Everything that shapes a compiled run (hashable: a cache key)."""

    model: nn.Module
    build: Build
    hparam_names: tuple[str, ...]
    epochs: int
    batch_size: int
    decay: tuple[float, tuple[float, ...]]
    keep_params: bool
    data: tuple[jax.ShapeDtypeStruct, ...]

    @property
    def steps(self) -> int:
        return steps_per_epoch(self.data[0].shape[0], self.batch_size)


def _make_run(setup: _Setup) -> Callable[..., Any]:
    """One whole run as a function of arrays, to be jitted."""
    model, steps, batch_size = setup.model, setup.steps, setup.batch_size
    factor, at = setup.decay
    decay = step_decay(1.0, setup.epochs * steps, factor=factor, at=at)

    def accuracy(params, batch_stats, x, y):
        variables = {"params": params, "batch_stats": batch_stats}
        logits: Any = model.apply(variables, x, train=False)
        predicted = jnp.argmax(logits, -1)
        return jnp.mean(predicted == y)

    def loss_fn(params, batch_stats, x, y):
        variables = {"params": params, "batch_stats": batch_stats}
        out, updates = model.apply(
            variables, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        return jnp.mean(loss), updates["batch_stats"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def run(hparams, params, batch_stats, key, x, y, x_test, y_test):
        init_params = params
        optimizer = setup.build(hparams, decay)

        def train_step(carry, idx):
            params, batch_stats, opt_state = carry
            (loss, batch_stats), grads = grad_fn(
                params, batch_stats, x[idx], y[idx]
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, batch_stats, opt_state), loss

        def train_epoch(carry, epoch_and_key):
            epoch, epoch_key = epoch_and_key
            perm = jax.random.permutation(epoch_key, x.shape[0])
            batches = perm[: steps * batch_size].reshape(steps, batch_size)
            carry, losses = jax.lax.scan(train_step, carry, batches)
            params, batch_stats, _ = carry
            record: tuple[Any, ...] = (
                jnp.mean(losses),
                accuracy(params, batch_stats, x_test, y_test),
                layca_optax.rotation_metrics(params, init_params, prefix=""),
            )
            if setup.keep_params:
                record += (params,)
            jax.debug.callback(_epoch_done, epoch, ordered=True)
            return carry, record

        carry = (params, batch_stats, optimizer.init(params))
        keys = jax.random.split(key, setup.epochs)
        epochs_and_keys = (jnp.arange(setup.epochs), keys)
        carry, history = jax.lax.scan(train_epoch, carry, epochs_and_keys)
        params, batch_stats, _ = carry
        train_accuracy = accuracy(params, batch_stats, x, y)
        return params, batch_stats, train_accuracy, history

    return run


@functools.lru_cache(maxsize=8)
def _init_fn(model: nn.Module) -> Callable[..., Any]:
    """``model.init`` in inference mode, jitted once per model."""
    return jax.jit(functools.partial(model.init, train=False))


def _compile(setup: _Setup) -> Any:
    """Compiles a run for these settings and the shapes of the data."""
    key = jax.eval_shape(jax.random.key, 0)
    sample = jax.ShapeDtypeStruct((1, *setup.data[0].shape[1:]), jnp.float32)
    variables = jax.eval_shape(_init_fn(setup.model), key, sample)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    hparams = {k: scalar for k in setup.hparam_names}
    run = jax.jit(_make_run(setup))
    params, batch_stats = variables["params"], variables["batch_stats"]
    args = (hparams, params, batch_stats, key, *setup.data)
    return run.lower(*args).compile()


# Compiled runs, reused when the same setup is trained again (other seeds
# or hyperparameter values): compiling costs more than training in the
# demo. A few entries only: each holds an executable.
_compile_cached = functools.lru_cache(maxsize=16)(_compile)


def _call_cached(cached: Any, *args: Any) -> Any:
    """``cached(*args)``, bypassing the cache if ``args`` are unhashable
    (e.g. a model with list fields)."""
    try:
        hash(args)
    except TypeError:
        return cached.__wrapped__(*args)
    return cached(*args)


def _check(data: Dataset, epochs: int, batch_size: int, caller: str) -> None:
    if epochs < 1:
        raise ValueError(f"`{caller}(epochs=...)` must be >= 1, got {epochs}.")
    if steps_per_epoch(len(data.x_train), batch_size) < 1:
        raise ValueError(
            f"`{caller}`: {len(data.x_train)} samples make no batch of "
            f"{batch_size}."
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
        :class:`CNN`.
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
    _check(data, epochs, batch_size, "train_sweep")
    model = CNN() if model is None else model
    hparams = dict(hparams or {})
    for name, values in hparams.items():
        if len(values) != len(seeds):
            raise ValueError(
                f"`train_sweep`: hparams[{name!r}] has {len(values)} values "
                f"for {len(seeds)} seeds."
            )
    arrays = tuple(jnp.asarray(a) for a in data[:4])
    setup = _Setup(
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
    compiled = _call_cached(_compile_cached, setup)
    compile_seconds = time.perf_counter() - start
    runs = []
    for i, seed in enumerate(seeds):
        init_key, shuffle_key = jax.random.split(jax.random.key(seed))
        variables = _call_cached(_init_fn, model)(init_key, arrays[0][:1])
        args = (
            {k: jnp.float32(v[i]) for k, v in hparams.items()},
            variables["params"],
            variables["batch_stats"],
        )
        with _hook_lock:
            _hooks[:] = (
                [] if progress is None else [_shifted(progress, i * epochs)]
            )
        try:
            outputs = compiled(*args, shuffle_key, *arrays)
            jax.block_until_ready(outputs)
            jax.effects_barrier()  # every epoch reported
        finally:
            with _hook_lock:
                _hooks.clear()
        runs.append((*outputs, variables["params"]))
    seconds = time.perf_counter() - start
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
      model: the network; default :class:`CNN`.
      batch_size: minibatch size.
      keep_params: also return the parameters after every epoch.
      progress: called with the number of epochs done (1 to ``epochs``)
        after each epoch, from the host while the run goes on.

    Returns:
      A :class:`TrainResult`.
    """
    _check(data, epochs, batch_size, "train")
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
