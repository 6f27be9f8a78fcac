"""Image datasets from local files or scikit-learn, never downloaded.

Every loader (:func:`load_digits`, :func:`load_mnist`, and ``load_cifar``
in :mod:`layca_optax.experiments._cifar`) returns a :class:`Dataset` of
read-only NumPy arrays: float32 inputs in NHWC layout, int32 labels. Files
are looked for in an explicit ``data_dir``, else in the folder named by the
``LAYCA_DATA_DIR`` environment variable (:func:`resolve_data_dir`). A
missing, truncated or malformed file raises :class:`DatasetError`, a
``ValueError`` whose message names the path and the format expected there.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


ENV_VAR = "LAYCA_DATA_DIR"
"""The environment variable naming the data folder when none is passed."""

_MNIST = (
    "the MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)"
)


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


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, *, caller: str = "load"
) -> Path:
    """The data folder: ``data_dir`` if given, else ``$LAYCA_DATA_DIR``.

    Args:
      data_dir: the folder holding the dataset files, or None.
      caller: the function named in error messages.

    Returns:
      The folder, which exists.

    Raises:
      DatasetError: neither is set, or the folder does not exist.
    """
    if data_dir is None or os.fspath(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise DatasetError(
                f"{caller}: no data directory: pass data_dir (--data-dir) or "
                f"set {ENV_VAR}; nothing is downloaded"
            )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{caller}: data_dir {str(path)!r} is no folder")
    return path


@functools.lru_cache(maxsize=4)
def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits, the offline stand-in for MNIST.

    The paper's Section 6 MLP trains on MNIST; these 1,797 images ship with
    scikit-learn, so this works anywhere. Pixels (0..16) are scaled to
    ``[0, 1]``. The split is stratified and deterministic: for each class,
    ``round(test_fraction * count)`` of its images, drawn by
    ``np.random.RandomState(seed)`` (classes in order; Python's rounding,
    half to even), form the test set; the defaults give 1,438 train and 359
    test images, each split in the original order. The result is cached.

    Args:
      test_fraction: the share of each class held out for testing.
      seed: the seed of the split.

    Returns:
      A :class:`Dataset` with inputs of shape ``(n, 8, 8, 1)``.

    Example:
      >>> data = load_digits()
      >>> data.x_train.shape, data.x_test.shape, data.num_classes
      ((1438, 8, 8, 1), (359, 8, 8, 1), 10)
    """
    if not 0 < test_fraction < 1:
        raise DatasetError(
            f"load_digits: test_fraction must be in (0, 1), got "
            f"{test_fraction!r}"
        )
    from sklearn.datasets import load_digits as sk_load_digits

    bunch: Any = sk_load_digits()
    x, y = bunch.images[..., None] / 16.0, bunch.target
    rng = np.random.RandomState(seed)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: round(test_fraction * len(idx))]] = True
    return make_dataset(x[~test], y[~test], x[test], y[test], "digits", 10)


def read_file(path: Path, caller: str) -> bytes:
    """The bytes of ``path``, gunzipped if it ends with ``.gz``.

    Raises:
      DatasetError: naming ``caller`` and ``path``, if it cannot be read.
    """
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{caller}: cannot read {path}: {err}") from err


def _idx(path: Path, magic: int, shape: tuple[int | None, ...]) -> np.ndarray:
    """Parses an IDX file of unsigned bytes (MNIST's format)."""
    raw, ndim = read_file(path, "load_mnist"), len(shape)
    head = 4 + 4 * ndim

    def fail(why: str) -> DatasetError:
        kind = "images" if ndim == 3 else "labels"
        return DatasetError(
            f"load_mnist: {path} is not an MNIST IDX {kind} file ({why}); "
            f"expected {_MNIST}"
        )

    if len(raw) < head:
        raise fail(f"{len(raw)} bytes, shorter than its header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise fail(f"magic number {got:#010x}, not {magic:#010x}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    if any(e is not None and d != e for d, e in zip(dims, shape, strict=True)):
        raise fail(f"dimensions {dims}")
    if len(raw) != head + int(np.prod(dims)):
        raise fail(f"{len(raw)} bytes for dimensions {dims}: truncated")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _find(root: Path, name: str, folders: tuple[str, ...]) -> Path | None:
    for folder in ("", *folders):
        for candidate in (name, name + ".gz"):
            if (path := root / folder / candidate).is_file():
                return path
    return None


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """MNIST from its four IDX files in ``data_dir`` (or ``$LAYCA_DATA_DIR``).

    The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
    gzipped) may also lie in ``mnist/`` or ``MNIST/raw/`` below it. Each is
    checked: magic number (0x00000803 for images, 0x00000801 for labels),
    28 x 28 images, length, labels in 0..9, as many labels as images.
    Pixels are scaled to ``[0, 1]``.

    Args:
      data_dir: the folder, or None for ``$LAYCA_DATA_DIR``.

    Returns:
      A :class:`Dataset` with inputs of shape ``(n, 28, 28, 1)``.

    Raises:
      DatasetError: a file is missing or malformed (the message names it).
    """
    root = resolve_data_dir(data_dir, caller="load_mnist")
    arrays = []
    for name, magic, shape in (
        ("train-images-idx3-ubyte", 0x803, (None, 28, 28)),
        ("train-labels-idx1-ubyte", 0x801, (None,)),
        ("t10k-images-idx3-ubyte", 0x803, (None, 28, 28)),
        ("t10k-labels-idx1-ubyte", 0x801, (None,)),
    ):
        path = _find(root, name, ("mnist", "MNIST/raw"))
        if path is None:
            raise DatasetError(
                f"load_mnist: {root / name} not found (nor .gz, nor in "
                f"mnist/ or MNIST/raw/): expected {_MNIST}"
            )
        arrays.append((path, _idx(path, magic, shape)))
    (_, x), (_, y), (_, xt), (_, yt) = arrays
    for (path, labels), images in ((arrays[1], x), (arrays[3], xt)):
        if len(labels) != len(images) or labels.max(initial=0) > 9:
            raise DatasetError(
                f"load_mnist: {path} has {len(labels)} labels up to "
                f"{labels.max(initial=0)} for {len(images)} images; "
                f"expected one label in 0..9 per image"
            )
    x, xt = x[..., None] / 255.0, xt[..., None] / 255.0
    return make_dataset(x, y, xt, yt, "mnist", 10)


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
