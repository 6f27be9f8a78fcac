"""The training loop: every epoch of one run inside a single ``jax.jit``."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax
from layca_optax.examples._data import Dataset
from layca_optax.examples._models import CNN


BATCH_SIZE = 128
DECAY_FACTOR = 0.2
DECAY_AT = (0.8, 0.9)


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
      seconds: wall time of the run, compilation included (the
        initialization excluded).
      compile_seconds: the part of ``seconds`` spent compiling (about 0
        when a compiled run was reused, see :func:`train`).
      params: the final parameters.
      batch_stats: the final BatchNorm running statistics.
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
    """
    boundaries: dict[int, float] = {}
    for fraction in at:  # short runs may round two boundaries to one step
        step = max(1, round(fraction * total_steps))
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


# The progress hook of the run in flight: the compiled runs call
# ``_epoch_done`` (through ``jax.debug.callback``) after every epoch, and it
# forwards the epoch to the hook that :func:`train` installs. Compiled runs
# are cached and shared, so the hook cannot be baked into them.
_hook_lock = threading.Lock()
_hooks: list[Callable[[int], object]] = []


def _epoch_done(epoch: Any) -> None:
    with _hook_lock:
        hooks = list(_hooks)
    for hook in hooks:
        hook(int(epoch) + 1)


def _make_run(
    model: CNN,
    optimizer: optax.GradientTransformation,
    epochs: int,
    steps: int,
    batch_size: int,
):
    """The whole run as one function of arrays, to be jitted."""

    def logits_fn(params, batch_stats, x):
        variables = {"params": params, "batch_stats": batch_stats}
        return model.apply(variables, x, train=False)

    def accuracy(params, batch_stats, x, y):
        predicted = jnp.argmax(logits_fn(params, batch_stats, x), axis=-1)
        return jnp.mean(predicted == y)

    def loss_fn(params, batch_stats, x, y):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = model.apply(
            variables, x, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.mean(loss), updates["batch_stats"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def run(params, batch_stats, key, x, y, x_test, y_test):
        init_params = params

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
            record = (
                jnp.mean(losses),
                accuracy(params, batch_stats, x_test, y_test),
                layca_optax.rotation_metrics(params, init_params, prefix=""),
            )
            jax.debug.callback(_epoch_done, epoch, ordered=True)
            return carry, record

        carry = (params, batch_stats, optimizer.init(params))
        keys = jax.random.split(key, epochs)
        epochs_and_keys = (jnp.arange(epochs), keys)
        carry, history = jax.lax.scan(train_epoch, carry, epochs_and_keys)
        params, batch_stats, _ = carry
        train_accuracy = accuracy(params, batch_stats, x, y)
        return params, batch_stats, train_accuracy, history

    return run


@functools.lru_cache(maxsize=4)
def _init_fn(model: CNN):
    """``model.init`` in inference mode, jitted once per model."""
    return jax.jit(functools.partial(model.init, train=False))


def _compile(
    model: CNN,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    data: tuple[jax.ShapeDtypeStruct, ...],
):
    """Compiles the run for these settings and the shapes of ``data``."""
    key = jax.eval_shape(jax.random.key, 0)
    sample = jax.ShapeDtypeStruct((1, *data[0].shape[1:]), data[0].dtype)
    variables = jax.eval_shape(_init_fn(model), key, sample)
    steps = steps_per_epoch(data[0].shape[0], batch_size)
    run = _make_run(model, optimizer, epochs, steps, batch_size)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return jax.jit(run).lower(params, batch_stats, key, *data).compile()


# Compiled runs, reused when the same model and optimizer *object* are
# trained again for as many epochs on data of the same shapes (another seed,
# or the same seed to check determinism): compiling costs more than
# training in the demo. A few entries only: each holds an executable.
_compile_cached = functools.lru_cache(maxsize=8)(_compile)


def _call_cached(cached: Any, *args: Any) -> Any:
    """``cached(*args)``, bypassing the cache if ``args`` are unhashable
    (e.g. a model with list fields)."""
    try:
        hash(args)
    except TypeError:
        return cached.__wrapped__(*args)
    return cached(*args)


def train(
    optimizer: optax.GradientTransformation,
    data: Dataset,
    epochs: int,
    seed: int,
    *,
    model: CNN | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> TrainResult:
    """Trains ``model`` on ``data`` with ``optimizer``, all epochs in one jit.

    Minibatches of ``batch_size`` are drawn without replacement from a fresh
    permutation each epoch (the last incomplete one is dropped); the layer
    rotations (:func:`layca_optax.rotation_metrics` against the initial
    parameters) and the test accuracy are recorded at the end of every
    epoch. Deterministic for a given ``seed``, which sets the initialization
    and the shuffling.

    The compiled run is cached: training the same ``optimizer`` object and
    an equal ``model`` again for as many epochs (with any seed) reuses it.

    Args:
      optimizer: any optax transformation; its ``update`` gets ``params``.
        Build its schedule with :func:`step_decay` and
        ``epochs * steps_per_epoch(len(data.x), batch_size)`` steps.
      data: the dataset.
      epochs: number of passes over the train set (at least 1).
      seed: the seed of the initialization and of the shuffling.
      model: the network; default :class:`CNN`.
      batch_size: minibatch size.
      progress: called with the number of epochs done (1 to ``epochs``)
        after each epoch, from the host while the run goes on.

    Returns:
      A :class:`TrainResult`.
    """
    if epochs < 1:
        raise ValueError(f"`train(epochs=...)` must be >= 1, got {epochs}.")
    model = CNN() if model is None else model
    steps = steps_per_epoch(len(data.x), batch_size)
    if steps < 1:
        raise ValueError(
            f"`train`: {len(data.x)} samples make no batch of {batch_size}."
        )
    arrays = tuple(jnp.asarray(a) for a in data)
    specs = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays)
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    variables = _call_cached(_init_fn, model)(init_key, arrays[0][:1])
    jax.block_until_ready(variables)
    start = time.perf_counter()
    compiled = _call_cached(
        _compile_cached, model, optimizer, epochs, batch_size, specs
    )
    compile_seconds = time.perf_counter() - start
    args = (variables["params"], variables["batch_stats"], shuffle_key)
    with _hook_lock:
        _hooks[:] = [] if progress is None else [progress]
    try:
        outputs = compiled(*args, *arrays)
        params, batch_stats, train_accuracy, history = outputs
        train_accuracy, (losses, test_curve, rotations) = jax.device_get(
            (train_accuracy, history)
        )
        jax.effects_barrier()  # every epoch reported
    finally:
        with _hook_lock:
            _hooks.clear()
    seconds = time.perf_counter() - start
    return TrainResult(
        train_accuracy=float(train_accuracy),
        test_accuracy=float(test_curve[-1]),
        rotation={name: rotations[name] for name in model.layer_names},
        train_loss=losses,
        test_accuracy_curve=test_curve,
        seconds=seconds,
        compile_seconds=compile_seconds,
        params=params,
        batch_stats=batch_stats,
    )
