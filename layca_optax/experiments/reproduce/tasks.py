"""The reproduction's tasks: the CNN experiments' model and data (MNIST-1D,
or the paper's CIFAR models) and Section 6's MLP and data, each with its
schedule and a validation split carved from its train set; loaded once per
process. MNIST-1D also has a second, larger test set
(:func:`second_test_set`)."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from layca_optax.experiments.data import (
    ENV_VAR,
    TEST2_SEED,
    TEST2_SIZE,
    Dataset,
    DatasetError,
    load_cifar,
    load_digits,
    load_mnist,
    load_mnist1d,
    load_mnist1d_test2,
    resolve_data_dir,
    stratified_validation_split,
    take_per_class,
)
from layca_optax.experiments.models import C10CNN1, CNN, MLP, ResNet32
from layca_optax.experiments.reproduce.settings import Settings
from layca_optax.experiments.training import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
)


VALIDATION_FRACTION = 0.2
"""The share of each class of the train set held out for validation (the
paper's CIFAR protocol holds out 10%: :data:`CIFAR_VALIDATION_FRACTION`)."""

CIFAR_VALIDATION_FRACTION = 0.1
"""CIFAR's validation share: the paper's 5,000 of 50,000."""

VALIDATION_SEED = 0
"""The split's seed: one split for every training seed and configuration."""


@dataclasses.dataclass(frozen=True)
class Task:
    """A model, its data and its schedule.

    Attributes:
      model: the network.
      data: its train set (validation samples removed) and test set.
      batch_size: minibatch size.
      epochs: training epochs.
      decay_factor: the step decay's factor.
      decay_at: the step decay's boundaries, as fractions of the run.
      description: the report's line on the data and model.
      validation: ``(x, y)`` held out of the train set (stratified,
        seeded: :func:`holdout`).
    """

    model: Any
    data: Dataset
    batch_size: int
    epochs: int
    decay_factor: float
    decay_at: tuple[float, ...]
    description: str
    validation: tuple[Any, Any]


def holdout(
    data: Dataset,
    fraction: float = VALIDATION_FRACTION,
    folder: Any = None,
) -> tuple[Dataset, tuple[Any, Any]]:
    """``data`` without its validation samples, and those ``(x, y)``: a
    stratified split of the train set by :data:`VALIDATION_SEED` (see
    :func:`~layca_optax.experiments.data.stratified_validation_split`).

    Raises:
      DatasetError: too few train images, naming ``folder`` (where the
        files are) if given.
    """
    try:
        split = stratified_validation_split(data, fraction, VALIDATION_SEED)
    except DatasetError:
        raise DatasetError(
            f"{data.name}{' in ' + str(folder) if folder else ''}: "
            f"{len(data.y_train)} train images, too few to hold out a "
            "validation split; nothing trained"
        ) from None
    kept = data._replace(x_train=split.x_train, y_train=split.y_train)
    return kept, (split.x_test, split.y_test)


def _sizes(data: Dataset, validation: tuple[Any, Any]) -> str:
    return (
        f"{len(data.x_train):,} train / {len(validation[1]):,} validation / "
        f"{len(data.x_test):,} test"
    )


@functools.lru_cache(maxsize=4)
def second_test_set(settings: Settings) -> tuple[Any, Any] | None:
    """The CNN task's second test set: :data:`TEST2_SIZE` MNIST-1D sequences
    of data seed :data:`TEST2_SEED` (generated once per process, when a run
    needs it); None for the other tasks."""
    return load_mnist1d_test2() if settings.task == "mnist1d" else None


@functools.lru_cache(maxsize=4)
def cnn_task(settings: Settings) -> Task:
    """The CNN experiments' task (data loaded once per process).

    Raises:
      DatasetError: CIFAR files missing or malformed.
    """
    if settings.task == "mnist1d":
        data, val = holdout(load_mnist1d())
        return Task(
            CNN(), data, BATCH_SIZE, settings.epochs, DECAY_FACTOR, DECAY_AT,
            f"MNIST-1D (generated: {_sizes(data, val)}; test-2: "
            f"{TEST2_SIZE:,} sequences of data seed {TEST2_SEED}), 1-D CNN: "
            "4 conv + 1 dense kernels, BatchNorm without affine parameters",
            val,
        )  # fmt: skip
    classes = 10 if settings.task == "cifar10" else 100
    full = load_cifar(settings.data_dir, classes, standardize=True)
    folder = settings.data_dir or os.environ.get(ENV_VAR)
    data, val = holdout(full, CIFAR_VALIDATION_FRACTION, folder)
    model: Any
    if classes == 10:
        model, decay = C10CNN1(), (0.2, (0.8, 0.9, 0.97))
        name = "CIFAR-10, C10-CNN1 (25 kernel layers)"
    else:
        model, decay = ResNet32(num_classes=100), (0.1, (0.7, 0.9, 0.97))
        name = "CIFAR-100, ResNet-32 (34 kernel layers)"
    name += f", {_sizes(data, val)}"
    return Task(model, data, BATCH_SIZE, settings.epochs, *decay, name, val)


@functools.lru_cache(maxsize=4)
def mlp_task(settings: Settings) -> Task:
    """Section 6's MLP: on MNIST (1,000 per class, batch 2048) when the
    data folder (``--data-dir`` or ``$LAYCA_DATA_DIR``) holds its files,
    else on scikit-learn's 8x8 digits (1,438 train images, batch 256);
    :data:`VALIDATION_FRACTION` of the train images held out (see
    :func:`holdout`); ``x0.2`` at 90% of the run for every rate (the authors
    decay at 90% or 95% depending on the rate, and not at all for 3^-4).
    """
    folder = None
    try:  # MNIST when present locally, else the bundled digits
        folder = resolve_data_dir(settings.data_dir)
        mnist = load_mnist(folder)
    except DatasetError:
        full, batch, folder = load_digits(), 256, None
        name = "scikit-learn 8x8 digits"
    else:
        counts = np.bincount(mnist.y_train, minlength=mnist.num_classes)
        if counts.min() >= 1000:  # the paper's subset
            full = take_per_class(mnist, 1000)
            name = "MNIST (1,000 images per class)"
        else:  # a small local file: all of it
            full, name = mnist, "MNIST (a small local file)"
        batch = 2048
    data, val = holdout(full, folder=folder)
    return Task(
        MLP(), data, min(batch, len(data.x_train)), settings.mlp_epochs,
        DECAY_FACTOR, (0.9,),
        f"{name}: {_sizes(data, val)}, MLP Dense(784)-BN-ReLU-Dense(10); "
        "biases and BN parameters frozen (Layca's default mask), as the "
        "authors' code",
        val,
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


def task(settings: Settings, kind: str) -> Task:
    """The task of an experiment of ``kind`` ``"cnn"`` or ``"mlp"``."""
    return mlp_task(settings) if kind == "mlp" else cnn_task(settings)
