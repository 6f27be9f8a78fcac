"""CIFAR-10/100's "binary version": fixed-size records, no pickle at all.

A CIFAR-10 record is 1 label byte then 3,072 pixel bytes (1,024 red,
green, blue, row-major); files ``data_batch_1.bin`` .. ``data_batch_5.bin``
and ``test_batch.bin`` in ``cifar-10-batches-bin/`` of
``cifar-10-binary.tar.gz``. A CIFAR-100 record is a coarse label byte, a
fine label byte, then the 3,072 pixels; files ``train.bin`` and
``test.bin`` in ``cifar-100-binary/`` of ``cifar-100-binary.tar.gz``. A
file is its records and nothing else, so its size alone says how many
images it holds: the format to prefer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from layca_optax.experiments.data._dataset import DatasetError


PIXELS = 3072  # bytes per image: 32 x 32 x 3


class BinarySpec(NamedTuple):
    """One dataset's binary files."""

    name: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # 1 (CIFAR-10) or 2 (coarse, fine: CIFAR-100)
    expected: str
    images: int  # per train file
    test_images: int

    @property
    def record(self) -> int:
        """Bytes per image: its labels and pixels."""
        return self.label_bytes + PIXELS

    def count(self, file: str) -> int:
        """The images the real ``file`` holds: the most it may hold."""
        return self.test_images if file in self.test else self.images

    def limit(self, file: str) -> int:
        """The most bytes ``file`` may hold: its records."""
        return self.count(file) * self.record

    def what(self, file: str) -> str:
        """``file`` in words, for messages."""
        return f"a file of {self.count(file)} {self.name} records"


SPECS = {
    10: BinarySpec(
        "CIFAR-10",
        "cifar-10-batches-bin",
        "cifar-10-binary.tar.gz",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
        1,
        "the CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin) "
        "from cifar-10-binary.tar.gz",
        10000,
        10000,
    ),
    100: BinarySpec(
        "CIFAR-100",
        "cifar-100-binary",
        "cifar-100-binary.tar.gz",
        ("train.bin",),
        ("test.bin",),
        2,
        "the CIFAR-100 binary files (train.bin, test.bin) from "
        "cifar-100-binary.tar.gz",
        50000,
        10000,
    ),
}


def binary_batch(
    where: str, raw: bytes, spec: BinarySpec, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(data, labels)`` of one binary file, validated.

    Args:
      where: the file, for messages.
      raw: its bytes (at most ``spec.limit``, checked by the reader).
      spec: the dataset's binary format.
      k: the classes: every label must lie in ``0..k-1`` (and
        CIFAR-100's coarse labels in ``0..19``).

    Returns:
      ``(N, 3072)`` uint8 pixels (a view of ``raw``) and N int64 labels.

    Raises:
      DatasetError: naming ``where``, if the size is not a whole number of
        records or a label is out of range.
    """

    def fail(why: str) -> DatasetError:
        return DatasetError(
            f"load_cifar: {where}: {why}; expected {spec.expected}"
        )

    if len(raw) % spec.record:
        raise fail(
            f"{len(raw)} bytes: not a whole number of {spec.record}-byte "
            "records"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, spec.record)
    labels = records[:, spec.label_bytes - 1].astype(np.int64)
    checks: list[tuple[str, np.ndarray, int]] = [("label", labels, k)]
    if spec.label_bytes == 2:
        checks.insert(0, ("coarse label", records[:, 0], 20))
    for what, values, most in checks:
        if (bad := np.flatnonzero(values >= most)).size:
            i = int(bad[0])
            raise fail(
                f"record {i}'s {what} is {values[i]}, not in 0..{most - 1}"
            )
    return records[:, spec.label_bytes :], labels
