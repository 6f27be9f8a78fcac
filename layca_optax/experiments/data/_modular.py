"""Modular addition, generated: every pair ``(a, b)`` with label
``(a + b) mod p``, split into train, validation and test sets."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModularData:
    """The table of ``a + b mod p``, split three ways (read-only arrays).

    Each input is the token sequence ``[a, b, p]`` (``p`` is the ``=``
    token), so the vocabulary has ``p + 1`` tokens; labels lie in
    ``[0, p)``. The train and validation sets together are the training
    fraction of the table; the test set is the rest.

    Attributes:
      p: the modulus.
      x_train: int32 ``(n_train, 3)``: the pairs trained on.
      y_train: int32 ``(n_train,)``.
      x_val: int32 ``(n_val, 3)``: the held-out part of the training
        fraction, for choosing hyperparameters.
      y_val: int32 ``(n_val,)``.
      x_test: int32 ``(n_test, 3)``: every other pair.
      y_test: int32 ``(n_test,)``.
    """

    p: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def vocab(self) -> int:
        """The number of input tokens: ``0 .. p - 1`` and ``=``."""
        return self.p + 1


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int32)
    a.flags.writeable = False
    return a


def _sizes(p: int, train_fraction: float, validation_fraction: float):
    """``(n_train, n_train + n_val)``; ``ValueError`` for bad arguments."""
    if not (isinstance(p, int) and p >= 2):
        raise ValueError(f"modular_addition: p must be an int >= 2, got {p!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(
            "modular_addition: train_fraction must be in (0, 1), got "
            f"{train_fraction!r}"
        )
    if not 0 <= validation_fraction < 1:
        raise ValueError(
            "modular_addition: validation_fraction must be in [0, 1), got "
            f"{validation_fraction!r}"
        )
    n = p * p
    n_train_val = round(train_fraction * n)
    n_val = round(validation_fraction * n_train_val)
    n_train = n_train_val - n_val
    if n_train < 1 or n_train_val >= n:
        raise ValueError(
            f"modular_addition: p={p}, train_fraction={train_fraction} and "
            f"validation_fraction={validation_fraction} leave an empty "
            "train or test set"
        )
    return n_train, n_train_val


def modular_addition(
    p: int,
    train_fraction: float,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> ModularData:
    """The split table of ``(a + b) mod p``.

    The ``p * p`` pairs are shuffled by ``np.random.default_rng(seed)``:
    the first ``round(train_fraction * p * p)`` are the training fraction,
    whose last ``round(validation_fraction * n)`` are held out as the
    validation set; the other pairs are the test set.

    Args:
      p: the modulus, at least 2.
      train_fraction: the share of the table in train + validation, in
        (0, 1).
      validation_fraction: the share of the training fraction held out,
        in [0, 1).
      seed: the seed of the shuffle.

    Returns:
      A :class:`ModularData` with non-empty train and test sets.

    Raises:
      ValueError: an argument out of range, or a split that would leave
        the train or test set empty.

    Example:
      >>> data = modular_addition(7, 0.5, 0.2)
      >>> len(data.x_train), len(data.x_val), len(data.x_test)
      (19, 5, 25)
      >>> a, b, eq = data.x_train[0]
      >>> int(eq), bool(data.y_train[0] == (a + b) % 7)
      (7, True)
    """
    n_train, n_train_val = _sizes(p, train_fraction, validation_fraction)
    n = p * p
    a, b = np.divmod(np.arange(n), p)
    x = np.stack([a, b, np.full(n, p)], axis=1)
    y = (a + b) % p
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, [n_train, n_train_val])
    arrays = [_frozen(z[i]) for i in parts for z in (x, y)]
    return ModularData(p, *arrays)
