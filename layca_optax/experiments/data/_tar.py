"""Regular files and ``.tar.gz`` members, read with every size bounded.

``tarfile.open`` reads a member's PAX (``x``) or GNU long-name (``L``)
header whole, whatever size it declares, before the caller sees the
member: a few bytes of gzip can make it allocate gigabytes. This reader
walks the archive's 512-byte header blocks itself, through gzip with a
bounded read, admits extended headers of at most :data:`MAX_EXTENDED`
bytes, reads only regular-file members it was asked for, and checks each
declared size before reading a byte of the data. Its peak memory is the
wanted members' bytes plus 64 KiB.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple


BLOCK = 512
MAX_EXTENDED = 64 * 1024
"""The most bytes of a PAX or GNU long-name header (real ones hold ~100)."""
_CHUNK = 64 * 1024
_REGULAR = {b"0", b"\0", b"7"}
_NO_DATA = {b"1", b"2", b"3", b"4", b"5", b"6"}  # links, devices, dirs, FIFOs


class TarError(ValueError):
    """An archive that is not a tar.gz, or holds what the caller refuses."""


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (after symlinks).

    The type is checked with ``os.stat`` before opening, and again on the
    open descriptor (opened with ``O_NONBLOCK``, so a FIFO swapped in
    between does not block): FIFOs, devices and sockets are refused.

    Raises:
      OSError: it cannot be opened, or is not a regular file.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class Member(NamedTuple):
    """A tar entry: its name, type flag, declared size, data offset."""

    name: str
    type: bytes
    size: int
    offset: int


def _number(field: bytes) -> int:
    """A header number: octal text, or GNU base-256 (high bit set)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] & 0x40 else value
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarError(f"header number {field!r} is not octal") from None


def _checked(block: bytes, offset: int) -> None:
    stored = _number(block[148:156])
    blank = block[:148] + b" " * 8 + block[156:]
    signed = sum(b - 256 if b > 127 else b for b in blank)
    if stored not in (sum(blank), signed):
        raise TarError(f"bad header checksum at byte {offset}")


def _pax(data: bytes, offset: int) -> dict[str, str]:
    """The ``len key=value\\n`` records of a PAX header."""
    out, i = {}, 0
    while i < len(data) and data[i : i + 1] != b"\0":
        space = data.find(b" ", i)
        try:
            length = int(data[i:space])
            key, _, value = data[space + 1 : i + length - 1].partition(b"=")
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        except (ValueError, UnicodeDecodeError):
            raise TarError(f"bad PAX header at byte {offset}") from None
        if length <= 0:
            raise TarError(f"bad PAX header at byte {offset}")
        i += length
    return out


class _Stream:
    """The decompressed archive, read no further than ``end`` bytes."""

    def __init__(self, file: gzip.GzipFile, end: int, what: str) -> None:
        self.file, self.end, self.what, self.pos = file, end, what, 0

    def read(self, n: int, name: str = "") -> bytes:
        if self.pos + n > self.end:
            raise TarError(
                f"{name} ends at byte {self.pos + n}, past the {self.end} "
                f"{self.what} can fill"
            )
        data = self.file.read(n)
        self.pos += len(data)
        if len(data) < n:
            raise TarError(f"truncated at byte {self.pos}")
        return data

    def skip(self, n: int, name: str) -> None:
        if self.pos + n > self.end:
            self.read(n, name)  # raises
        while n > 0:
            n -= len(self.read(min(n, _CHUNK), name))


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def members(stream: _Stream, most: int) -> Iterator[Member]:
    """Each entry's header, extended headers applied; the caller reads or
    skips its data (:func:`read_members`). At most ``most`` headers."""
    extra: dict[str, str] = {}
    for _ in range(most):
        offset = stream.pos
        block = stream.read(BLOCK, "a header")
        if not block.strip(b"\0"):
            return
        _checked(block, offset)
        kind, size = block[156:157], _number(block[124:136])
        name = block[:100].split(b"\0", 1)[0]  # POSIX ustar: a prefix
        if block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        if kind in (b"x", b"g", b"L", b"K"):
            if not 0 <= size <= MAX_EXTENDED:
                raise TarError(
                    f"the extended header ({kind.decode()}) at byte {offset} "
                    f"declares {size} bytes, more than {MAX_EXTENDED}"
                )
            data = stream.read(_padded(size), "an extended header")[:size]
            if kind == b"x":
                extra.update(_pax(data, offset))
            elif kind == b"L":
                extra["path"] = data.split(b"\0", 1)[0].decode("latin-1")
            continue
        text = extra.pop("path", None) or name.decode("latin-1")
        if "size" in extra:
            digits = extra["size"]
            size = int(digits) if digits.isdigit() and len(digits) < 20 else -1
        extra = {}
        if size < 0:
            raise TarError(f"a negative size at byte {offset}")
        yield Member(text, kind, 0 if kind in _NO_DATA else size, stream.pos)
    raise TarError(f"more than {most} entries")


def read_members(
    archive: Path,
    wanted: dict[str, int],
    end: int,
    what: str,
) -> dict[str, bytes]:
    """The regular-file members named in ``wanted`` from a ``.tar.gz``.

    Args:
      archive: the file (a regular file: see :func:`open_regular`).
      wanted: ``{member name: most bytes}``; a larger declared size fails
        before any of its data is read.
      end: the most decompressed bytes to read: the archive's files fill no
        more.
      what: the files, in words (``"the CIFAR-10 files"``).

    Returns:
      ``{member name: bytes}`` of the wanted members found, reading stops
      once all are found.

    Raises:
      TarError: a wanted member is not a regular file or too large, a
        header is corrupt or too large, the archive runs past ``end``.
      OSError, EOFError, zlib.error: a corrupt gzip stream.
    """
    out: dict[str, bytes] = {}
    with open_regular(archive) as raw, gzip.GzipFile(fileobj=raw) as unzipped:
        stream = _Stream(unzipped, end, what)
        for member in members(stream, 4 * 64):
            limit = wanted.get(member.name)
            if limit is not None and member.type not in _REGULAR:
                raise TarError(f"{member.name} is not a regular file")
            if limit is not None and member.size > limit:
                raise TarError(
                    f"{member.name} has {member.size} bytes, more than the "
                    f"{limit} it can hold"
                )
            if member.offset + member.size > end:
                stream.read(member.size, member.name)  # raises
            if limit is None:
                stream.skip(_padded(member.size), member.name)
                continue
            out[member.name] = stream.read(member.size, member.name)
            stream.skip(_padded(member.size) - member.size, member.name)
            if len(out) == len(wanted):
                break
    return out


def read_regular(path: Path, limit: int) -> bytes | int:
    """The bytes of the regular file ``path`` if it holds at most ``limit``,
    else its size (checked with ``fstat`` before reading; at most
    ``limit + 1`` bytes are read if it grows meanwhile).

    Raises:
      OSError: it cannot be read, or is not a regular file.
    """
    with open_regular(path) as f:
        if (size := os.fstat(f.fileno()).st_size) > limit:
            return size
        raw = f.read(limit + 1)
    return raw if len(raw) <= limit else len(raw)
