"""A recording's file: an ``.npz`` of ``paths`` and ``rates``, read with
every declared size checked before anything is allocated (no pickle)."""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from typing import IO, Any

import numpy as np
import numpy.lib.format as npy

from layca_optax._io import zip_directory_problem


MAX_RECORDING_BYTES = 256 * 2**20
"""The largest recording file, and the largest float64 ``rates`` (or
stored array) it may declare: 256 MiB."""
MAX_PATHS = 10**6
"""The most layers (``paths``) a recording may have."""
_MAX_DIRECTORY_BYTES = 64 * 2**10  # np.savez's two members take ~200 bytes


class Refused(ValueError):
    """What makes a file no recording, for :meth:`RotationRecording.load`
    to prefix with the path."""


# How a corrupt zip or .npy header fails (ValueError: a bad .npy header).
UNREADABLE = (
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    struct.error,
    NotImplementedError,  # an unsupported compression
    RuntimeError,  # an encrypted member
    ValueError,
)


# Each array's rank, dtype kind, and both in words.
_ARRAYS = {
    "paths": (1, "U", "a 1-d array of str"),
    "rates": (2, "f", "a 2-d array of real floats"),
}


def read_npz(f: IO[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``paths`` and ``rates`` from an open ``.npz`` file, each header
    checked before its array is read."""
    start = f.read(6)
    if not start:
        raise Refused("an empty file, not an .npz archive")
    if start == b"\x93NUMPY":
        raise Refused(
            "a .npy file, not an .npz archive (save writes one holding "
            "'paths' and 'rates')"
        )
    f.seek(0)
    problem = zip_directory_problem(f, _MAX_DIRECTORY_BYTES, 64)
    if problem:
        raise Refused(f"not a readable .npz archive ({problem})")
    with zipfile.ZipFile(f) as zf:
        names = {n.removesuffix(".npy"): n for n in zf.namelist()}
        if len(names) != 2 or set(names) != {"paths", "rates"}:
            found = sorted(names)[:8] + ["..."] * (len(names) > 8)
            raise Refused(f"expected arrays 'paths' and 'rates', found {found}")
        for key, name in names.items():
            declared = zf.getinfo(name).file_size
            if declared > MAX_RECORDING_BYTES + _MAX_DIRECTORY_BYTES:
                raise Refused(
                    f"{key!r} declares {declared} bytes uncompressed, more "
                    f"than the {MAX_RECORDING_BYTES} bytes of a recording"
                )
        paths = _member(zf, zf.getinfo(names["paths"]), "paths")
        rates = _member(zf, zf.getinfo(names["rates"]), "rates")
    if len(paths) != rates.shape[1]:
        raise Refused(
            f"{len(paths)} paths for {rates.shape[1]} columns of rates"
        )
    return paths, rates


def _check_size(key: str, shape: tuple, dtype: np.dtype) -> None:
    """Refuses an array larger than a recording may hold."""
    count = math.prod(shape)
    stored, as_float64 = count * dtype.itemsize, count * 8
    if key == "paths" and count > MAX_PATHS:
        raise Refused(
            f"'paths' declares {count} layers, more than the {MAX_PATHS} "
            f"a recording may have"
        )
    if max(stored, as_float64 if key == "rates" else 0) > MAX_RECORDING_BYTES:
        raise Refused(
            f"{key!r} declares {shape} {dtype} ({max(stored, as_float64)} "
            f"bytes as loaded), more than the {MAX_RECORDING_BYTES} bytes "
            f"(256 MiB) a recording may hold"
        )


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> Any:
    """The array ``key`` of the archive: its header checked (dtype, shape,
    and size against the member's) before it is read."""
    with zf.open(info) as f:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(f)
        else:
            raise Refused(f"{key!r} is an .npy of version {version}")
        if dtype.hasobject:
            raise Refused(
                f"{key!r} holds Python objects (a pickled object array), "
                f"which are not loaded"
            )
        ndim, kind, wanted = _ARRAYS[key]
        if len(shape) != ndim or dtype.kind != kind:
            raise Refused(f"{key!r} is a {shape} {dtype} array, not {wanted}")
        size, held = math.prod(shape) * dtype.itemsize, info.file_size
        if size != held - f.tell():
            raise Refused(
                f"{key!r} declares {shape} {dtype} ({size} bytes), but its "
                f"member has {held - f.tell()} bytes after the header"
            )
        _check_size(key, shape, dtype)
    with zf.open(info) as f:  # again, from the start: numpy reads it all
        return npy.read_array(f, allow_pickle=False)
