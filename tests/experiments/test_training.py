"""The app's training loop (experiments/training): its errors name the
function the user called (the data loaders': test_datasets.py::TestMisuse)."""

import numpy as np
import optax
import pytest

from layca_optax.experiments.data import (
    Dataset,
)


pytest.importorskip("flax")

from layca_optax.experiments import train, train_sweep  # noqa: E402


def _data(n):
    x = np.zeros((n, 40, 1), np.float32)
    y = np.zeros(n, np.int32)
    return Dataset(x, y, x, y, "zeros", 10)


@pytest.mark.parametrize("fn", ["train", "train_sweep"])
def test_training_checks_name_the_function_called(fn):
    call = {
        "train": lambda data, epochs: train(optax.sgd(0.1), data, epochs, 0),
        "train_sweep": lambda data, epochs: train_sweep(
            lambda hp, decay: optax.sgd(0.1), data, epochs, [0]
        ),
    }[fn]
    with pytest.raises(ValueError, match=rf"^`{fn}\(epochs=\.\.\.\)`"):
        call(_data(256), 0)
    with pytest.raises(ValueError, match=rf"^`{fn}`: 3 samples make no"):
        call(_data(3), 1)
