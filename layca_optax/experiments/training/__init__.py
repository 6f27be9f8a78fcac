"""The experiments' training: every epoch of a run inside one ``jax.jit``,
runs of a grid sharing one compiled run, the paper's step decay."""

from layca_optax.experiments.training._compiled import Build
from layca_optax.experiments.training._results import SweepResult, TrainResult
from layca_optax.experiments.training._schedule import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
    step_decay,
    steps_per_epoch,
)
from layca_optax.experiments.training._step import (
    accuracy,
    call_cached,
    init_fn,
    loss_and_stats,
    predict,
)
from layca_optax.experiments.training._sweep import train, train_sweep


__all__ = (
    "BATCH_SIZE",
    "DECAY_AT",
    "DECAY_FACTOR",
    "Build",
    "SweepResult",
    "TrainResult",
    "accuracy",
    "call_cached",
    "init_fn",
    "loss_and_stats",
    "predict",
    "step_decay",
    "steps_per_epoch",
    "train",
    "train_sweep",
)
