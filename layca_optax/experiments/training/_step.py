"""Applying a model with BatchNorm statistics: the training loss, the
predictions, the accuracy, the jitted initialization."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def loss_and_stats(
    model: nn.Module, params: Any, batch_stats: Any, x: jax.Array, y: Any
) -> tuple[jax.Array, Any]:
    """The mean cross-entropy of a minibatch in training mode, and the
    updated BatchNorm running statistics."""
    variables = {"params": params, "batch_stats": batch_stats}
    logits, updates = model.apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.mean(loss), updates["batch_stats"]


def predict(
    model: nn.Module, params: Any, batch_stats: Any, x: jax.Array
) -> jax.Array:
    """The predicted labels in inference mode (running statistics)."""
    variables = {"params": params, "batch_stats": batch_stats}
    logits: Any = model.apply(variables, x, train=False)
    return jnp.argmax(logits, -1)


def accuracy(
    model: nn.Module, params: Any, batch_stats: Any, x: jax.Array, y: Any
) -> jax.Array:
    """The share of ``x`` whose predicted label is ``y``."""
    return jnp.mean(predict(model, params, batch_stats, x) == y)


def call_cached(cached: Any, *args: Any) -> Any:
    """``cached(*args)``, bypassing the cache if ``args`` are unhashable
    (e.g. a model with list fields)."""
    try:
        hash(args)
    except TypeError:
        return cached.__wrapped__(*args)
    return cached(*args)


@functools.lru_cache(maxsize=8)
def _init_fn(model: nn.Module) -> Callable[..., Any]:
    return jax.jit(functools.partial(model.init, train=False))


def init_fn(model: nn.Module) -> Callable[..., Any]:
    """``model.init`` in inference mode, jitted once per (hashable) model:
    ``init_fn(model)(key, sample_batch)`` gives the variables."""
    return call_cached(_init_fn, model)
