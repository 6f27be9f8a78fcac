"""MNIST-1D, generated locally and standardized with train statistics."""

from __future__ import annotations

import functools
import random
from typing import NamedTuple

import numpy as np


DATA_SEED = 42
"""The seed of MNIST-1D's own generator (the dataset's published default)."""


class Dataset(NamedTuple):
    """A classification dataset as read-only NumPy arrays.

    Attributes:
      x: train inputs, float32 of shape ``(n_train, length, 1)`` (NWC).
      y: train labels, int32 of shape ``(n_train,)``.
      x_test: test inputs, float32 of shape ``(n_test, length, 1)``.
      y_test: test labels, int32 of shape ``(n_test,)``.
    """

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a


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
      A :class:`Dataset` with inputs of shape ``(n, 40, 1)``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = data_seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x, x_test = raw["x"], raw["x_test"]
    mean, std = x.mean(), x.std()
    return Dataset(
        x=_frozen(((x - mean) / std)[..., None], np.float32),
        y=_frozen(raw["y"], np.int32),
        x_test=_frozen(((x_test - mean) / std)[..., None], np.float32),
        y_test=_frozen(raw["y_test"], np.int32),
    )
