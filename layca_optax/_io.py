"""File helpers: atomic writes (an interrupted run never leaves half a
file) and the checks of the loaders (regular files of bounded size)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]
) -> None:
    """Writes a file atomically: into a temporary file, then ``os.replace``.

    Readers see either the old file or the complete new one, never a
    partial one. The temporary file is in the destination's folder (so the
    rename stays on one file system), flushed to disk before the rename,
    and removed if ``write`` fails.

    Args:
      path: the destination; its folder must exist.
      write: writes the content into the binary file object it is given.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates it 0o600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` of UTF-8 ``text``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


class FileRefused(ValueError):
    """A file a loader does not open (not regular, too large); its message
    already names the loader and the file."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((words for test, words in _KINDS if test(mode)), "no file")


def check_regular_file(
    path: str | os.PathLike[str], max_bytes: int, caller: str, what: str
) -> int:
    """The size of ``path``, a regular file of at most ``max_bytes``.

    Symbolic links are followed (a link to a regular file is fine); a
    directory, FIFO, device or socket is refused before it is opened, so
    reading never blocks on a pipe nor runs on without end (``/dev/zero``).

    Args:
      path: the file.
      max_bytes: the largest size accepted.
      caller: the loader, named in the errors (``"RotationHistory.load_csv"``).
      what: the files it reads, in words (``"a history file"``).

    Returns:
      The file's size in bytes.

    Raises:
      OSError: the file cannot be stat'ed (missing, no permission).
      FileRefused: a ``ValueError``, ```caller`: path: ...``, naming
        the kind of file, or the size and the limit.
    """
    where = f"`{caller}`: {os.fspath(path)}"
    info = os.stat(path)
    mode = info.st_mode
    if not stat.S_ISREG(mode):
        raise FileRefused(
            f"{where}: cannot read it: {_kind(mode)}, not a regular file "
            f"({what} must be one)."
        )
    size = info.st_size
    if size > max_bytes:
        raise FileRefused(
            f"{where}: {size} bytes, more than the {max_bytes} bytes "
            f"({max_bytes / 2**20:g} MiB) read from {what}."
        )
    return size


def open_regular_file(
    path: str | os.PathLike[str], max_bytes: int, caller: str, what: str
) -> IO[bytes]:
    """``path`` opened for binary reading, after :func:`check_regular_file`.

    The file is opened without blocking and checked again through its
    descriptor (it may have been replaced in between).

    Args:
      path: the file.
      max_bytes: the largest size accepted.
      caller: the loader, named in the errors.
      what: the files it reads, in words.

    Returns:
      A binary file object; close it (``with``).

    Raises:
      OSError: the file cannot be opened.
      FileRefused: as :func:`check_regular_file`.
    """
    check_regular_file(path, max_bytes, caller, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            raise FileRefused(
                f"`{caller}`: {os.fspath(path)}: changed while opened: "
                f"{_kind(info.st_mode)} of {info.st_size} bytes, not a "
                f"regular file of at most {max_bytes} bytes."
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def zip_directory_problem(
    f: IO[bytes], max_bytes: int, max_entries: int
) -> str | None:
    """What is wrong with the zip archive ``f`` before ``ZipFile`` reads
    its central directory (whole, one object per entry): no directory, or
    one of more than ``max_entries`` entries or ``max_bytes`` bytes; None
    if it is fine. ``f`` is left at its start."""
    end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
    f.seek(0)
    if end is None:
        return "no zip directory found"
    entries = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if size > max_bytes or entries > max_entries:
        return (
            f"a zip directory of {entries} entries in {size} bytes, more "
            f"than {max_entries} entries or {max_bytes} bytes"
        )
    return None
