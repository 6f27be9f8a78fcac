"""The reproduction's tasks: the CNN experiments' model and data (MNIST-1D,
or the paper's CIFAR models) and Section 6's MLP and data, each with its
schedule; loaded once per process."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from layca_optax.experiments._settings import Settings
from layca_optax.experiments.data import (
    Dataset,
    DatasetError,
    load_cifar,
    load_digits,
    load_mnist,
    load_mnist1d,
    resolve_data_dir,
    take_per_class,
)
from layca_optax.experiments.models import C10CNN1, CNN, MLP, ResNet32
from layca_optax.experiments.training import (
    BATCH_SIZE,
    DECAY_AT,
    DECAY_FACTOR,
)


@dataclasses.dataclass(frozen=True)
class Task:
    """A model, its data and its schedule."""

    model: Any
    data: Dataset
    batch_size: int
    epochs: int
    decay_factor: float
    decay_at: tuple[float, ...]
    description: str


@functools.lru_cache(maxsize=4)
def cnn_task(settings: Settings) -> Task:
    """The CNN experiments' task (data loaded once per process).

    Raises:
      DatasetError: CIFAR files missing or malformed.
    """
    if settings.task == "mnist1d":
        return Task(
            CNN(), load_mnist1d(), BATCH_SIZE, settings.epochs,
            DECAY_FACTOR, DECAY_AT,
            "MNIST-1D (4,000 train / 1,000 test, generated), 1-D CNN: 4 "
            "conv + 1 dense kernels, BatchNorm without affine parameters",
        )  # fmt: skip
    classes = 10 if settings.task == "cifar10" else 100
    data = load_cifar(settings.data_dir, classes, standardize=True)
    model: Any
    if classes == 10:
        model, decay = C10CNN1(), (0.2, (0.8, 0.9, 0.97))
        name = "CIFAR-10, C10-CNN1 (25 kernel layers)"
    else:
        model, decay = ResNet32(num_classes=100), (0.1, (0.7, 0.9, 0.97))
        name = "CIFAR-100, ResNet-32 (34 kernel layers)"
    return Task(model, data, BATCH_SIZE, settings.epochs, *decay, name)


@functools.lru_cache(maxsize=4)
def mlp_task(settings: Settings) -> Task:
    """Section 6's MLP: on MNIST (1,000 per class, batch 2048) when the
    data folder (``--data-dir`` or ``$LAYCA_DATA_DIR``) holds its files,
    else on scikit-learn's 8x8 digits (1,438 train images, batch 256);
    ``x0.2`` at 90% of the run for every rate (the authors decay at 90% or
    95% depending on the rate, and not at all for 3^-4).
    """
    try:  # MNIST when present locally, else the bundled digits
        mnist = load_mnist(resolve_data_dir(settings.data_dir))
    except DatasetError:
        data, batch = load_digits(), 256
        name = "scikit-learn 8x8 digits (1,438 train / 359 test)"
    else:
        counts = np.bincount(mnist.y_train, minlength=mnist.num_classes)
        if counts.min() >= 1000:  # the paper's subset
            data = take_per_class(mnist, 1000)
            name = "MNIST (1,000 train images per class)"
        else:  # a small local file: all of it
            data = mnist
            name = f"MNIST ({len(data.x_train):,} train images)"
        batch = min(2048, len(data.x_train))
    return Task(
        MLP(), data, batch, settings.mlp_epochs, DECAY_FACTOR, (0.9,),
        f"{name}, MLP Dense(784)-BN-ReLU-Dense(10); biases and BN "
        "parameters frozen (Layca's default mask), as the authors' code",
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
