"""Where CIFAR's files are: an unpacked folder or the ``.tar.gz`` archive.

Both formats (binary records, python pickles) are found the same way, each
file read only if it is a regular file no larger than its format allows.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Protocol

from layca_optax.experiments.data._dataset import DatasetError, too_large
from layca_optax.experiments.data._tar import (
    TarError,
    read_members,
    read_regular,
)


class Spec(Protocol):
    """What the finder needs of a format's description."""

    @property
    def name(self) -> str:
        """``"CIFAR-10"`` or ``"CIFAR-100"``."""

    @property
    def folder(self) -> str:
        """The folder of the files, in the archive and unpacked."""

    @property
    def archive(self) -> str:
        """The ``.tar.gz`` file name."""

    @property
    def train(self) -> tuple[str, ...]:
        """The train files."""

    @property
    def test(self) -> tuple[str, ...]:
        """The test files."""

    @property
    def expected(self) -> str:
        """The files expected, in words, for messages."""

    def limit(self, file: str) -> int:
        """The most bytes ``file`` may hold."""

    def what(self, file: str) -> str:
        """``file`` in words, for messages."""


def present(root: Path, spec: Spec) -> bool:
    """Whether ``root`` holds ``spec``'s folder, files or archive (any kind
    of entry: one that is not a regular file is refused when read)."""
    first = spec.train[0]
    return any(
        os.path.lexists(p)
        for p in (root / spec.folder / first, root / first, root / spec.archive)
    )


def _read(path: Path, spec: Spec, name: str) -> bytes:
    limit = spec.limit(name)
    try:
        raw = read_regular(path, limit)
    except OSError as err:
        raise DatasetError(
            f"load_cifar: cannot read {path} ({err}): expected {spec.expected}"
        ) from err
    if isinstance(raw, int):
        where = f"load_cifar: {path}"
        raise DatasetError(too_large(where, str(raw), spec.what(name), limit))
    return raw


def files(root: Path, spec: Spec) -> dict[str, tuple[str, bytes]]:
    """``{name: (where, content)}`` of ``spec``'s files, from its folder
    (``root/<folder>`` or ``root``) if there, else from its archive.

    Raises:
      DatasetError: naming the file, if one is missing, not a regular
        file, too large, or the archive is corrupt.
    """
    names = spec.train + spec.test
    for folder in (root / spec.folder, root):
        if os.path.lexists(folder / names[0]):
            out = {}
            for name in names:
                if not os.path.lexists(path := folder / name):
                    raise DatasetError(
                        f"load_cifar: {path} not found: expected "
                        f"{spec.expected}"
                    )
                out[name] = (str(path), _read(path, spec, name))
            return out
    return _archive(root / spec.archive, spec)


def _archive(archive: Path, spec: Spec) -> dict[str, tuple[str, bytes]]:
    names = spec.train + spec.test
    wanted = {f"{spec.folder}/{name}": spec.limit(name) for name in names}
    end = sum(wanted.values()) + 2**20  # room for the other entries
    try:
        got = read_members(archive, wanted, end, f"the {spec.name} files")
        if missing := [n for n in wanted if n not in got]:
            raise TarError(f"{missing[0]} not found")
    except (TarError, OSError, EOFError, zlib.error) as err:
        raise DatasetError(
            f"load_cifar: cannot read {archive} ({err}): expected "
            f"{spec.expected}"
        ) from err
    return {
        name: (f"{archive}:{spec.folder}/{name}", got[f"{spec.folder}/{name}"])
        for name in names
    }
