"""The experiment application behind ``layca-optax demo/reproduce/report/
modular/lm``.

It needs the ``examples`` extra (``pip install '.[examples]'`` in a clone).

Each study is a folder with the same few modules (``settings`` without
JAX, ``command`` its options, ``train``, ``stats``, ``figures``,
``report``, ``run`` and ``main`` the command): :mod:`~.demo` trains a
small CNN on MNIST-1D with Layca, tuned SGD (with and without weight
decay), Adam and Adam + Layca and plots the layer-rotation curves
(``layca-optax demo``); :mod:`~.reproduce` checks the paper's findings
with several seeds (``layca-optax reproduce``); :mod:`~.modular` compares
rotation control with tuned weight decay on modular arithmetic
(``layca-optax modular``); :mod:`~.lm` compares optimizers on a
character-level language model in steps to a target validation loss
(``layca-optax lm``). The data loaders
(:mod:`~layca_optax.experiments.data`) read MNIST-1D (generated),
scikit-learn's digits (bundled), and MNIST and CIFAR-10/100 from local
files; :class:`C10CNN1`, :class:`ResNet32` and :class:`MLP` are the paper's
models (:mod:`~layca_optax.experiments.models`); training lives in
:mod:`~layca_optax.experiments.training`.

The names below are loaded on first use, so that the command line's
``--help`` imports none of JAX, Optax and Flax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from layca_optax.experiments.data import (
        Dataset,
        DatasetError,
        load_cifar,
        load_digits,
        load_mnist,
        load_mnist1d,
        take_per_class,
        validation_split,
    )
    from layca_optax.experiments.demo.report import format_report
    from layca_optax.experiments.demo.run import run_demo
    from layca_optax.experiments.demo.settings import (
        DEFAULT_EPOCHS,
        OPTIMIZERS,
    )
    from layca_optax.experiments.demo.train import optimizers
    from layca_optax.experiments.models import (
        C10CNN1,
        CNN,
        MLP,
        ResNet32,
        conv1d_as_matmul,
    )
    from layca_optax.experiments.training import (
        SweepResult,
        TrainResult,
        step_decay,
        steps_per_epoch,
        train,
        train_sweep,
    )


_HOMES = {
    "data": (
        "Dataset",
        "DatasetError",
        "load_cifar",
        "load_digits",
        "load_mnist",
        "load_mnist1d",
        "take_per_class",
        "validation_split",
    ),
    "demo.settings": ("DEFAULT_EPOCHS", "OPTIMIZERS"),
    "demo.train": ("optimizers",),
    "demo.run": ("run_demo",),
    "demo.report": ("format_report",),
    "models": ("CNN", "C10CNN1", "MLP", "ResNet32", "conv1d_as_matmul"),
    "training": (
        "SweepResult",
        "TrainResult",
        "step_decay",
        "steps_per_epoch",
        "train",
        "train_sweep",
    ),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
_SUBMODULES = (
    "data",
    "demo",
    "lm",
    "models",
    "modular",
    "reproduce",
    "training",
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


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOME[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME, *_SUBMODULES})
