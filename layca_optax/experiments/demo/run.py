"""The demo: the CNN trained on MNIST-1D with each optimizer, and its
outputs written (:func:`run_demo`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layca_optax.experiments.data import load_mnist1d
from layca_optax.experiments.demo import report, train
from layca_optax.experiments.demo.settings import (
    DEFAULT_EPOCHS,
    DEFAULT_SEED,
    OPTIMIZERS,
    SGD_LEARNING_RATE,
)
from layca_optax.experiments.models import CNN
from layca_optax.experiments.training import steps_per_epoch


def run_demo(
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
    *,
    names: Sequence[str] = OPTIMIZERS,
    sgd_learning_rate: float = SGD_LEARNING_RATE,
    verbose: bool = False,
) -> dict[str, Any]:
    """Trains the CNN with each optimizer; optionally writes the results.

    All runs start from the same initial weights and see the same
    minibatches (both set by ``seed``); the data is MNIST-1D generated
    locally with its own seed (42). Results are deterministic for a given
    seed, except the timings.

    Args:
      epochs: epochs of each run.
      seed: the seed of the initialization and of the shuffling.
      out: if given, a directory (created if needed) that receives, each
        written atomically, ``results.json``, ``layer_rotation.png`` (the
        layer-rotation curves, one panel per optimizer, see
        :func:`~layca_optax.experiments.demo.figures.figure`), ``report.md`` and
        one ``history_<optimizer>.csv`` per run (per epoch: each layer's
        rotation, the train loss, the test accuracy; a
        :class:`layca_optax.RotationHistory` reads it back).
      names: the optimizers to train, from :data:`OPTIMIZERS`.
      sgd_learning_rate: plain SGD's initial learning rate.
      verbose: show a progress bar (or line) per optimizer on stderr.

    Returns:
      The content of ``results.json``: the settings, ``"layers"`` (kernel
      paths in forward order) and, under ``"optimizers"``, per optimizer
      its description and learning rate, final train and test accuracy,
      mean and minimum final rotation, each layer's final rotation and
      per-epoch curves, and its wall time.
    """
    data, model = load_mnist1d(), CNN()
    steps = steps_per_epoch(len(data.x_train))
    compared = train.optimizers(epochs * steps, sgd_learning_rate, names)
    runs = train.train_all(compared, data, model, epochs, seed, verbose)
    results = train.results(runs, data, model, epochs, seed, steps)
    if out is not None:
        report.write(Path(out), results)
    return results
