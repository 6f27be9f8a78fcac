"""The one dataset type, :class:`Dataset`, its errors, where its files are
looked for, and the splits of its train set.

Every loader (``load_mnist1d``, ``load_digits``, ``load_mnist``,
``load_cifar``) returns a :class:`Dataset` of read-only NumPy arrays:
float32 inputs (NHWC images, NWC sequences), int32 labels. Files are looked
for in an explicit ``data_dir``, else in the folder named by the
``LAYCA_DATA_DIR`` environment variable (:func:`resolve_data_dir`); nothing
is downloaded. A missing, truncated or malformed file raises
:class:`DatasetError`, a ``ValueError`` whose message names the path and
the format expected there. Files are data: sizes are checked against the
real format before anything is allocated, and gzip is read no further than
the format holds.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from layca_optax.experiments.common.caller import caller, public


ENV_VAR = "LAYCA_DATA_DIR"
"""The environment variable naming the data folder when none is passed."""


class DatasetError(ValueError):
    """A dataset's files are missing, unreadable or not in their format."""


class Dataset(NamedTuple):
    """A classification dataset as read-only NumPy arrays.

    Attributes:
      x_train: train inputs, float32 of shape ``(n_train, H, W, C)``
        (images) or ``(n_train, length, C)`` (sequences: MNIST-1D).
      y_train: train labels, int32 of shape ``(n_train,)``.
      x_test: test inputs, of the shape of ``x_train`` but ``n_test``.
      y_test: test labels, int32 of shape ``(n_test,)``.
      name: ``"mnist1d"``, ``"digits"``, ``"mnist"``, ``"cifar10"`` or
        ``"cifar100"`` (with ``"-val"`` after :func:`validation_split`).
      num_classes: the number of classes; labels lie in ``[0, num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a


def make_dataset(
    x: Any, y: Any, x_test: Any, y_test: Any, name: str, num_classes: int
) -> Dataset:
    """A :class:`Dataset` of read-only float32 inputs and int32 labels."""
    f, i = np.float32, np.int32
    x, x_test = _frozen(x, f), _frozen(x_test, f)
    y, y_test = _frozen(y, i), _frozen(y_test, i)
    return Dataset(x, y, x_test, y_test, name, num_classes)


@public
def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$LAYCA_DATA_DIR``.

    Errors name the loader the user called (or this function).

    Args:
      data_dir: the folder holding the dataset files, or None.

    Returns:
      The folder, which exists.

    Raises:
      DatasetError: neither is set, or the folder does not exist.
    """
    if data_dir is None or os.fspath(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise DatasetError(
                f"{caller()}: no data directory: pass data_dir "
                f"(--data-dir) or set {ENV_VAR}; nothing is downloaded"
            )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{caller()}: data_dir {str(path)!r} is no folder")
    return path


@contextlib.contextmanager
def open_file(path: Path) -> Iterator[io.BufferedIOBase]:
    """``path`` opened for binary reading, gunzipped if it ends with
    ``.gz``; read it inside the ``with`` (gzip fails there).

    Raises:
      DatasetError: naming the loader called and ``path``, if it cannot be
        opened or read (a missing file, a folder, a corrupt gzip stream).
    """
    try:
        with open(path, "rb") as raw:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield unzipped
            else:
                yield raw
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{caller()}: cannot read {path}: {err}") from err


def too_large(where: str, size: str, what: str, limit: int) -> str:
    """The message of a file larger than its format: ``<where> has <size>
    bytes, more than <what> can hold (<limit>)``."""
    return f"{where} has {size} bytes, more than {what} can hold ({limit})"


def read_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, gunzipped if it ends with ``.gz``: at most
    ``limit``, checked before reading (a plain file's size) or while
    reading (at most ``limit + 1`` bytes are gunzipped).

    Args:
      path: the file.
      limit: the most bytes the file may hold, ``what`` can hold.
      what: what the file should be, for the message (``"a CIFAR-10
        batch"``).

    Raises:
      DatasetError: naming the loader called and ``path``, if it cannot be
        read or holds more than ``limit`` bytes.
    """

    def fail(size: str) -> DatasetError:
        where = f"{caller()}: {path}"
        return DatasetError(too_large(where, size, what, limit))

    gz = path.suffix == ".gz"
    with open_file(path) as f:
        if not gz and (size := os.fstat(f.fileno()).st_size) > limit:
            raise fail(str(size))
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise fail(f"over {limit}" + (" gunzipped" if gz else ""))
    return raw


def validation_split(
    dataset: Dataset, fraction: float = 0.1, seed: int = 1
) -> Dataset:
    """Holds out part of the train set as validation, as the paper does.

    As the authors' ``get_val_split`` after ``np.random.seed(1)``: a
    permutation of the train indices by ``np.random.RandomState(seed)``;
    its first ``int(fraction * n_train)`` entries are the validation set,
    the rest the new train set (45,000 / 5,000 for CIFAR's 50,000).

    Args:
      dataset: the dataset to split.
      fraction: the held-out share of the train set.
      seed: the permutation's seed (the paper's 1).

    Returns:
      A :class:`Dataset` whose train arrays are the kept train images and
      whose test arrays are the validation images (``dataset``'s test set is
      unchanged there), named ``dataset.name + "-val"``.

    Example:
      >>> from layca_optax.experiments.data import load_digits
      >>> val = validation_split(load_digits())
      >>> val.x_train.shape[0], val.x_test.shape[0]
      (1295, 143)
    """
    n = len(dataset.y_train)
    k = int(fraction * n) if 0 < fraction < 1 else 0
    if not 0 < k < n:
        raise DatasetError(
            f"validation_split: fraction {fraction!r} of {n} train images "
            f"leaves no validation or no train image"
        )
    index = np.random.RandomState(seed).permutation(n)
    keep, val = index[k:], index[:k]
    x, y = dataset.x_train, dataset.y_train
    name, k = f"{dataset.name}-val", dataset.num_classes
    return make_dataset(x[keep], y[keep], x[val], y[val], name, k)


def take_per_class(
    dataset: Dataset, samples_per_class: int, seed: int = 1
) -> Dataset:
    """Keeps ``samples_per_class`` train images of each class.

    As the paper's Section 6 MNIST experiment (1,000 per class): for each
    class in order, ``np.random.RandomState(seed).choice`` without
    replacement; kept images stay in their original order. The test set is
    unchanged.

    Args:
      dataset: the dataset to reduce.
      samples_per_class: how many train images to keep per class.
      seed: the seed of the draw.

    Returns:
      The reduced :class:`Dataset`, same name.

    Example:
      >>> from layca_optax.experiments.data import load_digits
      >>> take_per_class(load_digits(), 50).x_train.shape
      (500, 8, 8, 1)
    """
    rng, y = np.random.RandomState(seed), dataset.y_train
    counts = np.bincount(y, minlength=dataset.num_classes)
    if not 0 < samples_per_class <= counts.min():
        raise DatasetError(
            f"take_per_class: samples_per_class must be in 1.."
            f"{counts.min()} (the smallest class), got {samples_per_class!r}"
        )
    chosen = [
        rng.choice(np.flatnonzero(y == c), samples_per_class, replace=False)
        for c in range(dataset.num_classes)
    ]
    keep = np.sort(np.concatenate(chosen))
    return dataset._replace(
        x_train=_frozen(dataset.x_train[keep], np.float32),
        y_train=_frozen(y[keep], np.int32),
    )


def _quotas(counts: np.ndarray, fraction: float) -> np.ndarray:
    """``round(fraction * counts.sum())`` spread over classes in proportion
    to ``counts`` (largest remainders first, ties to the first class)."""
    exact = fraction * counts
    quotas = np.floor(exact).astype(int)
    left = int(round(fraction * counts.sum())) - int(quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:left]] += 1
    return quotas


def stratified_validation_split(
    dataset: Dataset, fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """Holds out ``fraction`` of the train set, stratified, as validation.

    ``round(fraction * n_train)`` samples, spread over the classes in
    proportion to their counts (largest remainders first). For each class
    in order, a permutation of its train indices by one
    ``np.random.RandomState(seed)``; its first entries go to validation.
    Both parts keep the train set's order. The split depends only on the
    labels, ``fraction`` and ``seed``: the same for every training seed and
    configuration.

    Args:
      dataset: the dataset to split.
      fraction: the held-out share, in (0, 1).
      seed: the permutations' seed.

    Returns:
      A :class:`Dataset` whose train arrays are the kept train samples and
      whose test arrays are the validation samples (``dataset``'s test set
      is not in it), named ``dataset.name + "-val"``.

    Raises:
      DatasetError: ``fraction`` leaves no validation or no train sample.

    Example:
      >>> from layca_optax.experiments.data import load_digits
      >>> val = stratified_validation_split(load_digits())
      >>> val.x_train.shape[0], val.x_test.shape[0]
      (1150, 288)
    """
    y, n = dataset.y_train, len(dataset.y_train)
    if not 0 < fraction < 1 or not 0 < round(fraction * n) < n:
        raise DatasetError(
            f"stratified_validation_split: fraction {fraction!r} of {n} "
            "train samples leaves no validation or no train sample"
        )
    rng = np.random.RandomState(seed)
    counts = np.bincount(y, minlength=dataset.num_classes)
    held = [
        rng.permutation(np.flatnonzero(y == c))[:k]
        for c, k in enumerate(_quotas(counts, fraction))
    ]
    val = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(n), val)
    x, name, k = dataset.x_train, f"{dataset.name}-val", dataset.num_classes
    return make_dataset(x[keep], y[keep], x[val], y[val], name, k)
