"""The demo's training: its optimizers built, its runs trained, its results
gathered (:mod:`~layca_optax.experiments.demo.settings` holds its
settings)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

import layca_optax
from layca_optax.experiments.common.format import power_of_3
from layca_optax.experiments.common.progress import Progress
from layca_optax.experiments.common.runs import summary
from layca_optax.experiments.data import DATA_SEED, Dataset
from layca_optax.experiments.demo import settings
from layca_optax.experiments.demo.settings import OPTIMIZERS, SGD_LEARNING_RATE
from layca_optax.experiments.models import CNN
from layca_optax.experiments.training import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
    step_decay,
    train,
)


@functools.lru_cache(maxsize=16)
def optimizer(
    name: str, learning_rate: float, total_steps: int
) -> optax.GradientTransformation:
    """One optimizer, the same object for the same arguments (so that
    :func:`~layca_optax.experiments.train` reuses its compiled run)."""
    schedule = step_decay(learning_rate, total_steps)
    if name == "layca":
        return layca_optax.layca(schedule)
    if name == "sgd":
        return optax.sgd(schedule)
    if name == "sgd-wd":
        decay = optax.add_decayed_weights(
            settings.SGD_WD_WEIGHT_DECAY, mask=layca_optax.default_layer_mask
        )
        return optax.chain(decay, optax.sgd(schedule))
    if name == "adam":
        return optax.adam(schedule)
    if name == "adam-layca":
        return layca_optax.layca(schedule, base=optax.scale_by_adam())
    raise ValueError(
        f"unknown optimizer {name!r}; known: {settings.OPTIMIZERS}"
    )


def optimizers(
    total_steps: int,
    sgd_learning_rate: float = SGD_LEARNING_RATE,
    names: Sequence[str] = OPTIMIZERS,
) -> dict[str, tuple[float, str, optax.GradientTransformation]]:
    """The compared optimizers, each with its step-decay schedule.

    Args:
      total_steps: optimizer steps of the whole run (for the schedule).
      sgd_learning_rate: plain SGD's initial learning rate.
      names: which of :data:`OPTIMIZERS`, in this order.

    Returns:
      ``{name: (initial learning rate, description, transformation)}``.

    Example:
      >>> list(optimizers(100, names=["adam-layca", "sgd"]))
      ['adam-layca', 'sgd']
    """
    rates = {
        "layca": settings.LAYCA_LEARNING_RATE,
        "sgd": sgd_learning_rate,
        "sgd-wd": settings.SGD_WD_LEARNING_RATE,
        "adam": settings.ADAM_LEARNING_RATE,
        "adam-layca": settings.ADAM_LAYCA_LEARNING_RATE,
    }
    wd = settings.SGD_WD_WEIGHT_DECAY
    described = {
        "layca": "layca_optax.layca({})",
        "sgd": "optax.sgd({})",
        "sgd-wd": f"optax.sgd({{}}) + L2 {wd:g} on kernels",
        "adam": "optax.adam({})",
        "adam-layca": "layca_optax.layca({}, base=optax.scale_by_adam())",
    }
    out = {}
    for name in names:
        if name not in rates:
            raise ValueError(
                f"unknown optimizer {name!r}; known: {settings.OPTIMIZERS}"
            )
        lr = rates[name]
        text = power_of_3(lr, op="**", below_one=True)
        out[name] = (
            lr,
            described[name].format(text),
            optimizer(name, lr, total_steps),
        )
    return out


def train_all(
    compared: Mapping[str, tuple[float, str, optax.GradientTransformation]],
    data: Dataset,
    model: CNN,
    epochs: int,
    seed: int,
    verbose: bool,
) -> dict[str, Any]:
    """Trains each optimizer; ``{name: its results.json entry}``."""
    runs: dict[str, Any] = {}
    for i, (name, (lr, description, tx)) in enumerate(compared.items()):
        label = f"[{i + 1}/{len(compared)}] {name}"
        bar = Progress(label, epochs) if verbose else None
        result = train(tx, data, epochs, seed, model=model, progress=bar)
        runs[name] = summary(result, optimizer=description, learning_rate=lr)
        if bar is not None:
            bar.close(runs[name])
    return runs


def results(
    runs: Mapping[str, Any],
    data: Dataset,
    model: CNN,
    epochs: int,
    seed: int,
    steps: int,
) -> dict[str, Any]:
    """The content of ``results.json``: the settings, then the runs."""
    return {
        "task": "MNIST-1D, 1-D CNN without biases and BatchNorm affine "
        "parameters",
        "layca_optax_version": layca_optax.__version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "epochs": epochs,
        "seed": seed,
        "data_seed": DATA_SEED,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": steps,
        "schedule": {"decay_factor": DECAY_FACTOR, "decay_at": list(DECAY_AT)},
        "layers": list(model.layer_names),
        "optimizers": dict(runs),
    }
