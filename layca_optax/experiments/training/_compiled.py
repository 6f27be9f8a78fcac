"""One whole training run as one compiled function: every epoch under
``lax.scan``, the records of each epoch, the progress hook, the cache of
compiled runs."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import layca_optax
from layca_optax.experiments.training._schedule import (
    step_decay,
    steps_per_epoch,
)
from layca_optax.experiments.training._step import (
    accuracy,
    call_cached,
    init_fn,
    loss_and_stats,
)


Build = Callable[
    [Mapping[str, jax.Array], optax.Schedule], optax.GradientTransformation
]
"""``build(hparams, decay) -> optimizer``: called inside the compiled run
with one run's hyperparameters (traced scalars) and the step-decay shape
(``decay(0) == 1``); e.g. ``lambda hp, decay: optax.sgd(lambda s:
hp["learning_rate"] * decay(s))``. It must be hashable (a module-level
function) for the compiled run to be reused."""


# The progress hook of the run in flight: the compiled runs call
# ``_epoch_done`` (through ``jax.debug.callback``) after every epoch, and it
# forwards the epoch to the hook that :func:`reporting` installs.
# Compiled runs are cached and shared, so the hook cannot be baked in.
_hook_lock = threading.Lock()
_hooks: list[Callable[[int], object]] = []


def _epoch_done(epoch: Any) -> None:
    with _hook_lock:
        hooks = list(_hooks)
    for hook in hooks:
        hook(int(epoch) + 1)


@contextlib.contextmanager
def reporting(progress: Callable[[int], object] | None) -> Iterator[None]:
    """Within it, the compiled runs report each epoch done to ``progress``
    (from the host, while they run)."""
    with _hook_lock:
        _hooks[:] = [] if progress is None else [progress]
    try:
        yield
    finally:
        with _hook_lock:
            _hooks.clear()


@dataclasses.dataclass(frozen=True)
class Setup:
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


def _make_run(setup: Setup) -> Callable[..., Any]:
    """One whole run as a function of arrays, to be jitted."""
    model, steps, batch_size = setup.model, setup.steps, setup.batch_size
    factor, at = setup.decay
    decay = step_decay(1.0, setup.epochs * steps, factor=factor, at=at)
    grad_fn = jax.value_and_grad(
        functools.partial(loss_and_stats, model), has_aux=True
    )

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
                accuracy(model, params, batch_stats, x_test, y_test),
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
        train_accuracy = accuracy(model, params, batch_stats, x, y)
        return params, batch_stats, train_accuracy, history

    return run


def _compile(setup: Setup) -> Any:
    """Compiles a run for these settings and the shapes of the data."""
    key = jax.eval_shape(jax.random.key, 0)
    sample = jax.ShapeDtypeStruct((1, *setup.data[0].shape[1:]), jnp.float32)
    variables = jax.eval_shape(init_fn(setup.model), key, sample)
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


def compiled_run(setup: Setup) -> Any:
    """The compiled run of ``setup`` (cached when ``setup`` is hashable):
    ``run(hparams, params, batch_stats, shuffle_key, x, y, x_test,
    y_test)`` gives the final params, batch_stats, train accuracy and the
    per-epoch records (mean loss, test accuracy, rotations[, params])."""
    return call_cached(_compile_cached, setup)
