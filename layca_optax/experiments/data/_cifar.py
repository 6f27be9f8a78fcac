"""CIFAR-10/100 from the pickled "python version", read without running code.

The official batches are Python pickles, and ``pickle.load`` runs whatever
a pickle names. :func:`safe_unpickle` admits only the NumPy globals an
array needs, so a file that is not a batch fails without side effects.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from layca_optax import _checks as checks
from layca_optax.experiments.data._dataset import (
    Dataset,
    DatasetError,
    make_dataset,
    read_file,
    resolve_data_dir,
    too_large,
)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reduced: Any = np.empty(0).__reduce__()  # (_reconstruct, ...)
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reduced[0]
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; any other is an error."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed"
            ) from None


def safe_unpickle(file: IO[bytes]) -> Any:
    """Loads a pickle of plain data and NumPy arrays, running no other code.

    Admits containers and scalars the pickle opcodes build themselves
    (dict, list, tuple, bytes, str, int, float, bool, None) and exactly
    four globals: ``numpy.core.multiarray._reconstruct`` (or
    ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray`` and
    ``numpy.dtype``, which rebuild an array from its bytes. Any other
    global (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` before it is called; so do persistent ids.
    Python 2 strings become bytes (``encoding="bytes"``), as the CIFAR
    files need.

    Args:
      file: a binary file object at the start of the pickle.

    Returns:
      The unpickled object.

    Example:
      >>> import io, pickle
      >>> safe_unpickle(io.BytesIO(pickle.dumps({b"labels": [3, 1]})))
      {b'labels': [3, 1]}
    """
    return _RestrictedUnpickler(file, encoding="bytes").load()


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
_MEMBERS = 64  # the archives hold 9 (CIFAR-10) and 5 (CIFAR-100) entries


def _limit(spec: _Spec, file: str) -> int:
    """The most bytes ``file`` may have: its images and room for the rest
    (the real files have 31 to 41 bytes per image besides the pixels)."""
    return spec.count(file) * _BYTES_PER_IMAGE


def _files(root: Path, spec: _Spec) -> dict[str, tuple[str, bytes]]:
    """``{name: (where, content)}`` from a folder or the tar.gz archive;
    sizes are checked before reading."""
    names = spec.train + spec.test
    for folder in (root / spec.folder, root):
        if (folder / names[0]).is_file():
            out = {}
            for name in names:
                if not (path := folder / name).is_file():
                    raise DatasetError(
                        f"load_cifar: {path} not found: expected "
                        f"{spec.expected}"
                    )
                limit = _limit(spec, name)
                raw = read_file(path, limit, _files_of(spec, name))
                out[name] = (str(path), raw)
            return out
    archive = root / spec.archive
    if not archive.is_file():
        raise DatasetError(
            f"load_cifar: no {names[0]} in {root / spec.folder} or {root}, "
            f"and no {archive}: expected {spec.expected}"
        )
    try:
        with tarfile.open(archive, "r:gz") as tar:
            return _members(archive, tar, spec)
    except (OSError, EOFError, zlib.error, KeyError, tarfile.TarError) as err:
        raise DatasetError(
            f"load_cifar: cannot read {archive} ({err}): expected "
            f"{spec.expected}"
        ) from err


def _files_of(spec: _Spec, file: str) -> str:
    return f"a file of {spec.count(file)} CIFAR images"


def _members(
    archive: Path, tar: tarfile.TarFile, spec: _Spec
) -> dict[str, tuple[str, bytes]]:
    """The files of ``spec`` in ``tar``, each size checked before reading,
    reading no further into the archive than its files can fill."""
    names = spec.train + spec.test
    wanted = {f"{spec.folder}/{name}": name for name in names}
    end = sum(_limit(spec, name) for name in names) + 2**20
    out: dict[str, tuple[str, bytes]] = {}
    for _ in range(_MEMBERS):
        if len(out) == len(names) or (member := tar.next()) is None:
            break
        name, where = wanted.get(member.name), f"{archive}:{member.name}"
        if name is not None and member.size > (limit := _limit(spec, name)):
            where, size = f"load_cifar: {where}", str(member.size)
            what = _files_of(spec, name)
            raise DatasetError(too_large(where, size, what, limit))
        if member.offset_data + member.size > end:
            raise DatasetError(
                f"load_cifar: {archive}: {member.name} ends at byte "
                f"{member.offset_data + member.size}, past the {end} "
                f"the {spec.name} files can fill; expected {spec.expected}"
            )
        if name is None:
            continue
        file = tar.extractfile(member) if member.isfile() else None
        if file is None:
            raise KeyError(f"{member.name} is not a file")
        out[name] = (where, file.read())
    if missing := [n for n in names if n not in out]:
        raise KeyError(f"{spec.folder}/{missing[0]} not found")
    return dict(sorted(out.items(), key=lambda item: names.index(item[0])))


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

    try:
        batch = safe_unpickle(io.BytesIO(raw))
    except Exception as err:  # a corrupt pickle fails in many ways
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


@checks.public
def load_cifar(
    data_dir: str | os.PathLike[str] | None = None,
    num_classes: int = 10,
    *,
    standardize: bool = False,
) -> Dataset:
    """CIFAR-10 or CIFAR-100 from the "python version" pickled batches.

    Looks in ``data_dir`` (or ``$LAYCA_DATA_DIR``) and its
    ``cifar-10-batches-py/`` (``cifar-100-python/``) subfolder for
    ``data_batch_1..5`` and ``test_batch`` (``train`` and ``test``), else
    reads them from ``cifar-10-python.tar.gz`` (``cifar-100-python.tar.gz``)
    there without extracting it. Pickles are read by :func:`safe_unpickle`.
    Each batch is checked: a dict with an ``(N, 3072)`` uint8 ``data`` array
    (rows of 1024 red, green, blue pixels) and a list of N integer labels
    (``labels``, or ``fine_labels`` for CIFAR-100) in range. Files are data:
    a file's size is checked before it is read (at most 4,096 bytes per
    image), N may not exceed the real file's (10,000 per CIFAR-10 batch,
    50,000 and 10,000 in CIFAR-100's train and test files), and ``data``
    must hold the pickle's own bytes, row after row (no stride tricks).

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
    parts: dict[bool, list[Any]] = {False: [], True: []}
    for name, (where, raw) in _files(root, spec).items():
        batch = _batch(name, where, raw, spec, num_classes)
        parts[name in spec.test].append(batch)
    (x, y), (xt, yt) = (
        (
            np.concatenate([d for d, _ in parts[t]]),
            np.concatenate([labels for _, labels in parts[t]]),
        )
        for t in (False, True)
    )
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
