"""MNIST-1D, generated locally and standardized with train statistics; and
a second, larger test set drawn with another data seed."""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np

from layca_optax.experiments.data._dataset import Dataset, make_dataset


DATA_SEED = 42
"""The seed of MNIST-1D's own generator (the dataset's published default)."""

TEST2_SEED = 43
"""The generator's seed for the second test set (:func:`load_mnist1d_test2`)."""

TEST2_SIZE = 10_000
"""The second test set's default size."""


@functools.lru_cache(maxsize=4)
def _generate(seed: int, num_samples: int, train_split: float) -> Any:
    """``mnist1d.data.make_dataset`` with the default arguments but these
    (never ``get_dataset``, which downloads), NumPy's and Python's global
    random states restored afterwards; cached in memory only."""
    from mnist1d.data import get_dataset_args, make_dataset as generate

    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    args.train_split = train_split
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return generate(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _published(data_seed: int) -> Any:
    """The published size: 5,000 sequences, 80% of them train."""
    return _generate(data_seed, 5000, 0.8)


@functools.lru_cache(maxsize=4)
def load_mnist1d(data_seed: int = DATA_SEED) -> Dataset:
    """Generates MNIST-1D locally (no download) and standardizes it.

    Calls ``mnist1d.data.make_dataset`` with the default arguments (4,000
    train and 1,000 test sequences of length 40, 10 classes), never
    ``get_dataset``, which downloads. The generator reseeds NumPy's and
    Python's global random states; they are restored afterwards. Inputs are
    standardized with the train set's scalar mean and standard deviation.
    The result is cached per ``data_seed``.

    Args:
      data_seed: the seed of MNIST-1D's generator; 42 is the published one.

    Returns:
      A :class:`~layca_optax.experiments.Dataset` named ``"mnist1d"`` with
      inputs of shape ``(n, 40, 1)`` (NWC).

    Example:
      >>> data = load_mnist1d()
      >>> data.x_train.shape, data.x_test.shape, data.num_classes
      ((4000, 40, 1), (1000, 40, 1), 10)
    """
    raw = _published(data_seed)
    x, x_test = raw["x"], raw["x_test"]
    mean, std = x.mean(), x.std()
    return make_dataset(
        ((x - mean) / std)[..., None],
        raw["y"],
        ((x_test - mean) / std)[..., None],
        raw["y_test"],
        "mnist1d",
        10,
    )


def load_mnist1d_test2(
    size: int = TEST2_SIZE,
    data_seed: int = TEST2_SEED,
    train_seed: int = DATA_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """A second MNIST-1D test set: ``size`` new sequences drawn by the
    generator with another seed (``num_samples=size, train_split=0``, the
    other arguments the defaults; ``size // 10`` per class), standardized
    with the statistics of :func:`load_mnist1d`'s train set (``train_seed``).
    Generated in memory (about 5 s for 10,000), nothing written.

    Args:
      size: how many sequences (a multiple of 10).
      data_seed: the generator's seed; differs from ``train_seed``.
      train_seed: the seed of the train set whose statistics are used.

    Returns:
      ``(x, y)``: read-only float32 inputs ``(size, 40, 1)``, int32 labels.

    Example:
      >>> x, y = load_mnist1d_test2(100)
      >>> x.shape, np.bincount(y).tolist() == [10] * 10
      ((100, 40, 1), True)
    """
    if data_seed == train_seed or size < 10 or size % 10:
        raise ValueError(
            f"load_mnist1d_test2: size {size!r} must be a positive multiple "
            f"of 10 and data_seed {data_seed!r} differ from {train_seed!r}"
        )
    train = _published(train_seed)["x"]
    raw = _generate(data_seed, size, 0.0)
    x = ((raw["x_test"] - train.mean()) / train.std())[..., None]
    data = make_dataset(x[:0], raw["y_test"][:0], x, raw["y_test"], "", 10)
    return data.x_test, data.y_test
