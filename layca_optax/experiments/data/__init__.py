"""The experiments' data: one :class:`Dataset` type and its loaders (MNIST-1D
generated, scikit-learn's digits bundled, MNIST and CIFAR from local
files), never downloading."""

from layca_optax.experiments.data._cifar import load_cifar, safe_unpickle
from layca_optax.experiments.data._dataset import (
    ENV_VAR,
    Dataset,
    DatasetError,
    make_dataset,
    resolve_data_dir,
    take_per_class,
    validation_split,
)
from layca_optax.experiments.data._mnist import load_digits, load_mnist
from layca_optax.experiments.data._mnist1d import DATA_SEED, load_mnist1d
from layca_optax.experiments.data._modular import (
    ModularData as ModularData,
    modular_addition as modular_addition,
)


__all__ = (
    "DATA_SEED",
    "ENV_VAR",
    "Dataset",
    "DatasetError",
    "load_cifar",
    "load_digits",
    "load_mnist",
    "load_mnist1d",
    "make_dataset",
    "resolve_data_dir",
    "safe_unpickle",
    "take_per_class",
    "validation_split",
)
