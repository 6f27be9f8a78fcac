"""The experiment application behind ``layca-optax demo/reproduce/report``.

It needs the ``examples`` extra (``pip install '.[examples]'`` in a clone).

:mod:`layca_optax.experiments.mnist1d` trains a small CNN on MNIST-1D with
Layca, tuned SGD (with and without weight decay), Adam and Adam + Layca and
plots the layer-rotation curves (``layca-optax demo``);
:mod:`layca_optax.experiments.reproduce` checks the paper's findings with
several seeds (``layca-optax reproduce``). The data loaders read MNIST-1D
(generated), scikit-learn's digits (bundled), and MNIST and CIFAR-10/100
from local files; :class:`C10CNN1`, :class:`ResNet32` and :class:`MLP` are
the paper's models.
"""

from layca_optax.experiments._cifar import load_cifar
from layca_optax.experiments._data import load_mnist1d
from layca_optax.experiments._datasets import (
    Dataset,
    DatasetError,
    load_digits,
    load_mnist,
    take_per_class,
    validation_split,
)
from layca_optax.experiments._models import CNN, conv1d_as_matmul
from layca_optax.experiments._report import format_report
from layca_optax.experiments._train import (
    SweepResult,
    TrainResult,
    step_decay,
    steps_per_epoch,
    train,
    train_sweep,
)
from layca_optax.experiments._zoo import C10CNN1, MLP, ResNet32
from layca_optax.experiments.mnist1d import (
    DEFAULT_EPOCHS,
    OPTIMIZERS,
    optimizers,
    run_demo,
)


__all__ = (
    "CNN",
    "C10CNN1",
    "DEFAULT_EPOCHS",
    "MLP",
    "OPTIMIZERS",
    "Dataset",
    "DatasetError",
    "ResNet32",
    "SweepResult",
    "TrainResult",
    "conv1d_as_matmul",
    "format_report",
    "load_cifar",
    "load_digits",
    "load_mnist",
    "load_mnist1d",
    "optimizers",
    "run_demo",
    "step_decay",
    "steps_per_epoch",
    "take_per_class",
    "train",
    "train_sweep",
    "validation_split",
)
