"""CIFAR-10/100 from the binary records or the pickled "python version".

The binary version (:mod:`._cifar_binary`) is fixed-size records and is
the one to prefer. The official python batches are pickles, and
``pickle.load`` runs whatever a pickle names, while even a restricted
unpickler hands the file's state to NumPy's C ``__setstate__`` (a crafted
129-byte batch crashed it). :func:`safe_unpickle` unpickles nothing: it
interprets the opcodes and builds only plain data and numeric arrays over
the pickle's own bytes (:mod:`._cifar_pickle`).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from layca_optax.experiments.common.caller import public
from layca_optax.experiments.data import _cifar_binary as binary
from layca_optax.experiments.data._cifar_files import files, present
from layca_optax.experiments.data._cifar_pickle import read_pickle
from layca_optax.experiments.data._dataset import (
    Dataset,
    DatasetError,
    make_dataset,
    resolve_data_dir,
)


def safe_unpickle(file: IO[bytes], max_objects: int = 2**20) -> Any:
    """Loads a pickle of plain data and NumPy arrays, running no code.

    Nothing is unpickled: the opcodes are interpreted
    (:func:`pickletools.genops`), building containers and scalars (dict,
    list, tuple, bytes, str, int, float, bool, None) and NumPy arrays of a
    fixed-size numeric dtype (``int8``..``uint64``, ``float32``,
    ``float64``) over exactly the bytes their shape needs, from
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` (or
    ``numpy._core``) and its state, as NumPy writes them. No state reaches
    NumPy's ``__setstate__``, no object dtype is made, no other call is
    made. Any other global (``os.system``, ``builtins.eval``, ...), call,
    opcode (persistent ids, protocol 0 text), dtype or state raises
    ``pickle.UnpicklingError``; so does a stream making more than
    ``max_objects`` objects and memo entries. Python 2 strings become
    bytes, as the CIFAR files need.

    Args:
      file: a binary file object at the start of the pickle.
      max_objects: the most objects it may make (memory: about 100 bytes
        each besides bytes and arrays, which are the file's own).

    Returns:
      The unpickled object.

    Example:
      >>> import io, pickle
      >>> safe_unpickle(io.BytesIO(pickle.dumps({b"labels": [3, 1]})))
      {b'labels': [3, 1]}
    """
    return read_pickle(file, max_objects)


class _Spec(NamedTuple):
    name: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    expected: str
    images: int  # per train file, as many per test file
    test_images: int

    def count(self, file: str) -> int:
        """The images the real ``file`` holds: the most it may hold."""
        return self.test_images if file in self.test else self.images

    def limit(self, file: str) -> int:
        """The most bytes ``file`` may have: its images and room for the
        rest (the real files have 31 to 41 bytes per image besides the
        pixels)."""
        return self.count(file) * _BYTES_PER_IMAGE

    def what(self, file: str) -> str:
        """``file`` in words, for messages."""
        return f"a file of {self.count(file)} CIFAR images"

    def holder(self, file: str) -> str:
        """``file`` in words: ``"a CIFAR-10 batch"``."""
        if self.name == "CIFAR-10":
            return "a CIFAR-10 batch"
        return f"the CIFAR-100 {file} file"


_SPECS = {
    10: _Spec(
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        "the CIFAR-10 python batches (data_batch_1..5, test_batch) "
        "from cifar-10-python.tar.gz",
        10000,
        10000,
    ),
    100: _Spec(
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        ("test",),
        "fine_labels",
        "the CIFAR-100 python files (train, test) from cifar-100-python.tar.gz",
        50000,
        10000,
    ),
}

_PIXELS = 3072  # bytes per image: 32 x 32 x 3
_BYTES_PER_IMAGE = _PIXELS + 1024  # and room for labels, names, opcodes


def _batch(
    file: str, where: str, raw: bytes, spec: _Spec, k: int
) -> tuple[Any, Any]:
    """The ``(data, labels)`` of one batch, validated: at most the real
    file's images, as one bytes-backed uint8 array, and a list of int
    labels in range."""

    def fail(why: str) -> DatasetError:
        return DatasetError(
            f"load_cifar: {where}: {why}; expected {spec.expected}"
        )

    try:  # each label, filename and memo entry is an object
        batch = read_pickle(io.BytesIO(raw), 6 * spec.count(file) + 4096)
    except pickle.UnpicklingError as err:
        raise fail(f"not a CIFAR pickle ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict):
        raise fail(f"a pickled {type(batch).__name__}, not a dict")
    entry = {}
    for key, value in batch.items():
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                raise fail(f"key {key[:32]!r} is not text") from None
        entry[key] = value
    data, labels = entry.get("data"), entry.get(spec.label_key)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _PIXELS
    ):
        got = getattr(data, "shape", type(data).__name__)
        raise fail(f"'data' is {got}, not an (N, 3072) uint8 array")
    n, most = len(data), spec.count(file)
    if n > most:
        raise fail(
            f"'data' holds {n} images: more than the {most} of "
            f"{spec.holder(file)}"
        )
    # The pickle's own bytes, row after row: no stride tricks (a stride of
    # 0 repeats one byte for every pixel), no view of a larger buffer.
    backed = isinstance(data.base, bytes) and len(data.base) == data.nbytes
    if n and not (backed and data.strides == (_PIXELS, 1)):
        raise fail(
            f"'data' is not a bytes-backed array of its {n} x {_PIXELS} "
            f"pixels (strides {data.strides}, over "
            f"{type(data.base).__name__})"
        )
    key, valid = spec.label_key, f"an int in 0..{k - 1}"
    if not isinstance(labels, list | tuple):
        raise fail(f"no {key!r} list")
    if len(labels) != n:
        raise fail(f"{key!r} holds {len(labels)} labels for {n} images")
    for i, label in enumerate(labels):
        if type(label) is not int:  # no bool, no nested list
            raise fail(f"{key!r}[{i}] is a {type(label).__name__}, not {valid}")
        if not 0 <= label < k:
            raise fail(f"{key!r}[{i}] is not {valid}")
    return data, np.array(labels, np.int64)


@public
def load_cifar(
    data_dir: str | os.PathLike[str] | None = None,
    num_classes: int = 10,
    *,
    standardize: bool = False,
) -> Dataset:
    """CIFAR-10 or CIFAR-100 from the binary records or the python pickles.

    The binary version is preferred: looks in ``data_dir`` (or
    ``$LAYCA_DATA_DIR``) and its ``cifar-10-batches-bin/``
    (``cifar-100-binary/``) subfolder for ``data_batch_1..5.bin`` and
    ``test_batch.bin`` (``train.bin`` and ``test.bin``), else reads them
    from ``cifar-10-binary.tar.gz`` (``cifar-100-binary.tar.gz``) there.
    A record is the label byte (CIFAR-100: coarse, then fine) and 3,072
    pixel bytes; a file's size must be a whole number of records, at most
    the real file's. Only if none of these is there, the python version is
    read the same way: ``data_batch_1..5`` and ``test_batch`` (``train``,
    ``test``) in ``cifar-10-batches-py/`` (``cifar-100-python/``) or
    ``cifar-10-python.tar.gz`` (``cifar-100-python.tar.gz``), each by
    :func:`safe_unpickle` (nothing unpickled). Each batch is checked: a
    dict with an ``(N, 3072)`` uint8 ``data`` array (rows of 1024 red,
    green, blue pixels) and a list of N integer labels (``labels``, or
    ``fine_labels`` for CIFAR-100) in range; ``data`` must hold the
    pickle's own bytes, row after row; at most 6 objects per image.

    Files are data: only regular files are read (a FIFO, device or socket
    is refused, checked with ``os.stat`` before opening, without
    blocking); a file's size is checked before it is read (at most 4,096
    bytes per image for a pickle), N may not exceed the real file's
    (10,000 per CIFAR-10 batch, 50,000 and 10,000 in CIFAR-100's train and
    test files). Archives are read header by header (never by
    ``tarfile``): PAX and GNU long-name headers of at most 64 KiB, each
    wanted member a regular file whose declared size is checked before its
    data is read, gzip unpacked no further than the files can fill. Peak
    memory is about 5 times the pixel bytes, 4 of them the float32 result
    (measured: 176 MB to load 35 MB of pixels).

    Args:
      data_dir: the folder, or None for ``$LAYCA_DATA_DIR``.
      num_classes: 10 (CIFAR-10) or 100 (CIFAR-100, fine labels).
      standardize: subtract the train set's global scalar pixel mean and
        divide by its standard deviation, as the paper does (computed on
        all the train images, before any
        :func:`~layca_optax.experiments.data.validation_split`); else
        scale pixels to ``[0, 1]``.

    Returns:
      A :class:`Dataset` with inputs of shape ``(n, 32, 32, 3)`` (NHWC).

    Raises:
      DatasetError: a file is missing or malformed (the message names it
        and the expected format); nothing is downloaded.
    """
    spec = _SPECS.get(num_classes)
    if spec is None:
        raise DatasetError(
            f"load_cifar: num_classes must be 10 or 100, got {num_classes!r}"
        )
    root = resolve_data_dir(data_dir)
    x, y, xt, yt = _read_all(root, spec, num_classes)
    mean, scale = 0.0, 255.0
    if standardize:  # exact, from the pixel histogram
        values, counts = np.arange(256.0), np.bincount(x.ravel(), minlength=256)
        mean = float(values @ counts) / counts.sum()
        scale = float(np.sqrt(((values - mean) ** 2) @ counts / counts.sum()))

    def images(data: np.ndarray) -> np.ndarray:
        out = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        out = out.astype(np.float32, order="C")
        out -= np.float32(mean)
        out /= np.float32(scale)
        return out

    name = f"cifar{num_classes}"
    return make_dataset(images(x), y, images(xt), yt, name, num_classes)


def _read_all(root: Path, spec: _Spec, k: int) -> list[np.ndarray]:
    """Train pixels and labels, test pixels and labels: from the binary
    files if present, else the python ones; each file's bytes dropped once
    parsed."""
    bspec = binary.SPECS[k]
    use_binary = present(root, bspec)
    if not use_binary and not present(root, spec):
        raise DatasetError(
            f"load_cifar: no {spec.train[0]} in {root / spec.folder} or "
            f"{root}, no {bspec.train[0]} in {root / bspec.folder}, and no "
            f"{bspec.archive} or {spec.archive}: expected {bspec.expected} "
            f"(preferred), or {spec.expected}"
        )
    found = files(root, bspec if use_binary else spec)
    parts: dict[bool, list[Any]] = {False: [], True: []}
    for name in list(found):
        where, raw = found.pop(name)
        if use_binary:
            batch = binary.binary_batch(where, raw, bspec, k)
        else:
            batch = _batch(name, where, raw, spec, k)
        del raw
        parts[name in (bspec.test if use_binary else spec.test)].append(batch)
    return [
        np.concatenate([part[i] for part in parts[test]])
        for test in (False, True)
        for i in (0, 1)
    ]
