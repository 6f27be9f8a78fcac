"""MNIST from its IDX files, and scikit-learn's 8x8 digits (its offline
stand-in for the paper's Section 6 MLP)."""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from layca_optax.experiments.common.caller import public
from layca_optax.experiments.data._dataset import (
    Dataset,
    DatasetError,
    make_dataset,
    open_file,
    resolve_data_dir,
)


_TRAIN, _TEST = 60000, 10000  # images (and labels) in MNIST's two sets
_MNIST = (
    "the MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)"
)


def _idx(
    path: Path, magic: int, shape: tuple[int | None, ...], count: int
) -> np.ndarray:
    """Parses an IDX file of unsigned bytes (MNIST's format).

    ``shape``'s None is the number of items, at most ``count`` (the real
    set's). The header is checked before the data is read, and at most one
    byte more than it declares is read (or gunzipped).
    """
    ndim = len(shape)
    head = 4 + 4 * ndim
    kind = "images" if ndim == 3 else "labels"

    def fail(why: str) -> DatasetError:
        return DatasetError(
            f"load_mnist: {path} is not an MNIST IDX {kind} file ({why}); "
            f"expected {_MNIST}"
        )

    with open_file(path) as f:
        raw = f.read(head)
        if len(raw) < head:
            raise fail(f"{len(raw)} bytes, shorter than its header")
        got = int.from_bytes(raw[:4], "big")
        if got != magic:
            raise fail(f"magic number {got:#010x}, not {magic:#010x}")
        dims = struct.unpack(f">{ndim}I", raw[4:head])
        if any(
            e is not None and d != e for d, e in zip(dims, shape, strict=True)
        ):
            raise fail(f"dimensions {dims}")
        if dims[0] > count:
            which = "train" if count == _TRAIN else "test"
            raise fail(
                f"dimensions {dims}: {dims[0]} {kind}: more than the "
                f"{count} of MNIST's {which} set"
            )
        size, data = head + int(np.prod(dims)), b""
        # A plain file's size is known before reading; a gzipped one's is
        # not, so one byte more than declared is gunzipped, no more.
        n = None if path.suffix == ".gz" else os.fstat(f.fileno()).st_size
        if n is None or n == size:
            data = f.read(size - head + 1)
            n = head + len(data)
    if n > size:
        raise fail(
            f"more than the {size} bytes of dimensions {dims}: data after "
            f"the end"
        )
    if n < size:
        raise fail(
            f"{n} bytes for dimensions {dims}, which need {size}: truncated"
        )
    return np.frombuffer(data, np.uint8).reshape(dims)


def _find(root: Path, name: str, folders: tuple[str, ...]) -> Path | None:
    for folder in ("", *folders):
        for candidate in (name, name + ".gz"):
            if (path := root / folder / candidate).is_file():
                return path
    return None


@public
def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """MNIST from its four IDX files in ``data_dir`` (or ``$LAYCA_DATA_DIR``).

    The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
    gzipped) may also lie in ``mnist/`` or ``MNIST/raw/`` below it. Each is
    checked: magic number (0x00000803 for images, 0x00000801 for labels),
    28 x 28 images, at most as many as the real set (60,000 train, 10,000
    test), length, labels in 0..9, as many labels as images. The header is
    checked before the data is read, and no more than it declares is read
    or gunzipped. Pixels are scaled to ``[0, 1]``.

    Args:
      data_dir: the folder, or None for ``$LAYCA_DATA_DIR``.

    Returns:
      A :class:`Dataset` with inputs of shape ``(n, 28, 28, 1)``.

    Raises:
      DatasetError: a file is missing or malformed (the message names it).
    """
    root = resolve_data_dir(data_dir)
    arrays = []
    for name, magic, shape, count in (
        ("train-images-idx3-ubyte", 0x803, (None, 28, 28), _TRAIN),
        ("train-labels-idx1-ubyte", 0x801, (None,), _TRAIN),
        ("t10k-images-idx3-ubyte", 0x803, (None, 28, 28), _TEST),
        ("t10k-labels-idx1-ubyte", 0x801, (None,), _TEST),
    ):
        path = _find(root, name, ("mnist", "MNIST/raw"))
        if path is None:
            raise DatasetError(
                f"load_mnist: {root / name} not found (nor .gz, nor in "
                f"mnist/ or MNIST/raw/): expected {_MNIST}"
            )
        arrays.append((path, _idx(path, magic, shape, count)))
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
