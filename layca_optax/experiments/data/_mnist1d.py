"""MNIST-1D, generated locally and standardized with train statistics."""

from __future__ import annotations

import functools
import random

import numpy as np

from layca_optax.experiments.data._dataset import Dataset, make_dataset


DATA_SEED = 42
"""The seed of MNIST-1D's own generator (the dataset's published default)."""


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
    from mnist1d.data import get_dataset_args, make_dataset as generate

    args = get_dataset_args()
    args.seed = data_seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = generate(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
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
