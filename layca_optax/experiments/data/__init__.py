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
    stratified_validation_split,
    take_per_class,
    validation_split,
)
from layca_optax.experiments.data._mnist import load_digits, load_mnist
from layca_optax.experiments.data._mnist1d import (
    DATA_SEED,
    TEST2_SEED,
    TEST2_SIZE,
    load_mnist1d,
    load_mnist1d_test2,
)
from layca_optax.experiments.data._modular import (
    ModularData as ModularData,
    modular_addition as modular_addition,
)
from layca_optax.experiments.data._text import (
    KJV_PACKAGE as KJV_PACKAGE,
    KJV_SHA256 as KJV_SHA256,
    MAX_TEXT_BYTES as MAX_TEXT_BYTES,
    TextData as TextData,
    read_kjv as read_kjv,
    read_text as read_text,
    split_text as split_text,
)


__all__ = (
    "DATA_SEED",
    "ENV_VAR",
    "TEST2_SEED",
    "TEST2_SIZE",
    "Dataset",
    "DatasetError",
    "load_cifar",
    "load_digits",
    "load_mnist",
    "load_mnist1d",
    "load_mnist1d_test2",
    "make_dataset",
    "resolve_data_dir",
    "safe_unpickle",
    "stratified_validation_split",
    "take_per_class",
    "validation_split",
)
