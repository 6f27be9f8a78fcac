"""Examples for ``layca_optax``; they need the ``examples`` extra.

:mod:`layca_optax.examples.mnist1d` trains a small CNN on MNIST-1D with
Layca, tuned SGD (with and without weight decay), Adam and Adam + Layca and
plots the layer-rotation curves; run it with ``layca-optax demo``.
"""

from layca_optax.examples._data import Dataset, load_mnist1d
from layca_optax.examples._models import CNN, conv1d_as_matmul
from layca_optax.examples._report import format_report
from layca_optax.examples._train import (
    TrainResult,
    step_decay,
    steps_per_epoch,
    train,
)
from layca_optax.examples.mnist1d import (
    DEFAULT_EPOCHS,
    OPTIMIZERS,
    optimizers,
    run_demo,
)


__all__ = (
    "CNN",
    "DEFAULT_EPOCHS",
    "OPTIMIZERS",
    "Dataset",
    "TrainResult",
    "conv1d_as_matmul",
    "format_report",
    "load_mnist1d",
    "optimizers",
    "run_demo",
    "step_decay",
    "steps_per_epoch",
    "train",
)
