"""A training run's per-step, per-layer rotation rates (AdaptCopy's input).

:func:`rotation_rate_row` gives one step's rates, from any optimizer's
train step; :class:`RotationRecording` holds them for a run, saved and
loaded without pickle. :func:`adapt_copy` replays a recording in Layca.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import zipfile
import zlib
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.lib.format as npy
import optax

from layca_optax import _checks as checks
from layca_optax._io import (
    atomic_write,
    open_regular_file,
    zip_directory_problem,
)
from layca_optax._masks import leaf_paths
from layca_optax.monitor._metrics import rotation_rate


@checks.public
def rotation_rate_row(
    new_params: optax.Params,
    old_params: optax.Params,
    *,
    mask: optax.MaskOrFn = None,
) -> jax.Array:
    """Each layer's :func:`rotation_rate` as one vector, in leaf order.

    One row of a :class:`RotationRecording`; pure and jit-able, to return
    from any optimizer's train step.

    Args:
      new_params: parameters after the step.
      old_params: parameters before it.
      mask: which leaves are layers; default :func:`default_layer_mask`
        (kernels).

    Returns:
      A float32 (float64 with x64) vector with one entry per layer.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> old = {"a": jnp.eye(2), "b": jnp.eye(2), "bias": jnp.ones(2)}
      >>> new = {"a": jnp.eye(2), "b": jnp.array([[1.0, 0.5], [0.0, 1.0]]),
      ...        "bias": jnp.zeros(2)}
      >>> layca_optax.rotation_rate_row(new, old)
      Array([0.        , 0.35355338], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """
    rates = jax.tree.leaves(rotation_rate(new_params, old_params, mask=mask))
    if not rates:
        return jnp.zeros((0,), jnp.float32)
    return jnp.stack([jnp.reshape(r, ()) for r in rates])


@dataclasses.dataclass(frozen=True, eq=False)
class RotationRecording:
    """Per-step, per-layer rotation rates ``tan(theta)`` of a training run.

    Attributes:
      paths: the layers' paths (``"Dense_0/kernel"``), in column order.
      rates: a float64 array ``[steps, layers]``; row ``t`` holds each
        layer's rotation rate at step ``t`` (:func:`rotation_rate_row`).

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> old = {"w": jnp.eye(2), "bias": jnp.zeros(2)}
      >>> new = {"w": jnp.array([[1.0, 0.1], [0.0, 1.0]]), "bias": jnp.ones(2)}
      >>> rows = [layca_optax.rotation_rate_row(new, old)] * 3  # 3 steps
      >>> rec = layca_optax.RotationRecording.from_rows(old, rows)
      >>> rec.paths, rec.rates.shape
      (('w',), (3, 1))

      Saved and loaded without pickle:

      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "rates.npz")
      >>> rec.save(path)
      >>> layca_optax.RotationRecording.load(path).rates[:, 0].round(4)
      array([0.0707, 0.0707, 0.0707])

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 5.4.
    """

    paths: tuple[str, ...]
    rates: np.ndarray

    def __post_init__(self):
        if isinstance(self.paths, str | bytes):
            raise ValueError(
                "`RotationRecording(paths=...)` must be a sequence of path "
                f"strings, one per column, got the single string "
                f"{self.paths!r}; for one layer write ({self.paths!r},)."
            )
        try:
            paths: tuple[Any, ...] = tuple(self.paths)
        except TypeError:  # not iterable
            paths = (self.paths,)
        strings = all(isinstance(p, str) for p in paths)
        if not strings or len(set(paths)) != len(paths):
            raise ValueError(
                "`RotationRecording(paths=...)` must be distinct strings (no "
                f"duplicates), got {self.paths!r}."
            )
        try:
            rates = np.asarray(self.rates, np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                "`RotationRecording(rates=...)` must be numbers of shape "
                f"[steps, {len(paths)}], got {type(self.rates).__name__} "
                f"({err})."
            ) from None
        if rates.ndim != 2 or rates.shape[1] != len(paths):
            raise ValueError(
                "`RotationRecording(rates=...)` must have shape [steps, "
                f"{len(paths)}] (one column per path), got {rates.shape}."
            )
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "rates", rates)

    @classmethod
    def from_rows(
        cls,
        params: optax.Params,
        rows: Any,
        *,
        mask: optax.MaskOrFn = None,
    ) -> RotationRecording:
        """A recording from :func:`rotation_rate_row` outputs.

        Args:
          params: any parameters of the run (only their structure is read).
          rows: the rows, one per step: a list or a stacked array.
          mask: the mask given to :func:`rotation_rate_row`.

        Returns:
          A :class:`RotationRecording` whose paths are the layers of
          ``params`` in leaf order.
        """
        tree = rotation_rate(params, params, mask=mask)  # None: not a layer
        return cls(tuple(leaf_paths(tree)), np.asarray(rows))

    def save(self, file: str | os.PathLike[str]) -> None:
        """Writes ``file`` (``np.savez``) atomically: a temporary file in
        the same folder, then ``os.replace``.

        Args:
          file: the destination, written as given (name it ``*.npz``); its
            folder must exist.

        Returns:
          None; the file holds the arrays ``paths`` and ``rates``.
        """
        paths, rates = np.array(self.paths, str), self.rates
        atomic_write(file, lambda f: np.savez(f, paths=paths, rates=rates))

    @classmethod
    def load(cls, file: str | os.PathLike[str]) -> RotationRecording:
        """Reads a file written by :meth:`save` (no pickle).

        The file is data: it must be a regular file (a symbolic link to one
        is fine; a FIFO, device or folder is refused before it is opened)
        of at most :data:`MAX_RECORDING_BYTES` (256 MiB). Before anything is
        allocated, the archive's central directory (at most 64 KiB), each
        member's declared uncompressed size and each array's header are
        checked (1-d str ``paths`` of at most 10**6 entries, 2-d real
        floating ``rates``, one column per path, no object arrays, the
        declared bytes those the member holds, and the float64 ``rates``
        at most 256 MiB). Peak memory: the float64 ``rates`` (at most 256
        MiB) plus the array as stored when that is not float64 (at most as
        large again), plus NumPy's 16 MiB read buffer.

        Args:
          file: the file written by :meth:`save`.

        Returns:
          The :class:`RotationRecording`.

        Raises:
          ValueError: naming the file and the problem (not a regular file,
            larger than the cap, not an ``.npz`` archive, empty, truncated,
            other arrays, wrong dtypes or shapes, arrays over the cap).
          OSError: the file cannot be opened (missing, no permission).
        """
        where = f"`RotationRecording.load`: {os.fspath(file)}"
        try:
            with open_regular_file(
                file,
                MAX_RECORDING_BYTES,
                "RotationRecording.load",
                "a recording",
            ) as f:
                paths, rates = _read_npz(f)
        except _Refused as err:
            raise ValueError(f"{where}: {err}.") from None
        except _UNREADABLE as err:
            raise ValueError(
                f"{where}: not a readable .npz archive "
                f"({type(err).__name__}: {err})."
            ) from None
        try:
            return cls(tuple(str(p) for p in paths), rates)
        except ValueError as err:  # e.g. a path twice
            raise ValueError(f"{where}: {err}") from None


MAX_RECORDING_BYTES = 256 * 2**20
"""The largest recording file, and the largest float64 ``rates`` (or
stored array) it may declare: 256 MiB."""
MAX_PATHS = 10**6
"""The most layers (``paths``) a recording may have."""
_MAX_DIRECTORY_BYTES = 64 * 2**10  # np.savez's two members take ~200 bytes


class _Refused(ValueError):
    """What makes a file no recording, for :meth:`RotationRecording.load`
    to prefix with the path."""


# How a corrupt zip or .npy header fails (ValueError: a bad .npy header).
_UNREADABLE = (
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


def _read_npz(f: IO[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``paths`` and ``rates`` from an open ``.npz`` file, each header
    checked before its array is read."""
    start = f.read(6)
    if not start:
        raise _Refused("an empty file, not an .npz archive")
    if start == b"\x93NUMPY":
        raise _Refused(
            "a .npy file, not an .npz archive (save writes one holding "
            "'paths' and 'rates')"
        )
    f.seek(0)
    problem = zip_directory_problem(f, _MAX_DIRECTORY_BYTES, 64)
    if problem:
        raise _Refused(f"not a readable .npz archive ({problem})")
    with zipfile.ZipFile(f) as zf:
        names = {n.removesuffix(".npy"): n for n in zf.namelist()}
        if len(names) != 2 or set(names) != {"paths", "rates"}:
            found = sorted(names)[:8] + ["..."] * (len(names) > 8)
            raise _Refused(
                f"expected arrays 'paths' and 'rates', found {found}"
            )
        for key, name in names.items():
            declared = zf.getinfo(name).file_size
            if declared > MAX_RECORDING_BYTES + _MAX_DIRECTORY_BYTES:
                raise _Refused(
                    f"{key!r} declares {declared} bytes uncompressed, more "
                    f"than the {MAX_RECORDING_BYTES} bytes of a recording"
                )
        paths = _member(zf, zf.getinfo(names["paths"]), "paths")
        rates = _member(zf, zf.getinfo(names["rates"]), "rates")
    if len(paths) != rates.shape[1]:
        raise _Refused(
            f"{len(paths)} paths for {rates.shape[1]} columns of rates"
        )
    return paths, rates


def _check_size(key: str, shape: tuple, dtype: np.dtype) -> None:
    """Refuses an array larger than a recording may hold."""
    count = math.prod(shape)
    stored, as_float64 = count * dtype.itemsize, count * 8
    if key == "paths" and count > MAX_PATHS:
        raise _Refused(
            f"'paths' declares {count} layers, more than the {MAX_PATHS} "
            f"a recording may have"
        )
    if max(stored, as_float64 if key == "rates" else 0) > MAX_RECORDING_BYTES:
        raise _Refused(
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
            raise _Refused(f"{key!r} is an .npy of version {version}")
        if dtype.hasobject:
            raise _Refused(
                f"{key!r} holds Python objects (a pickled object array), "
                f"which are not loaded"
            )
        ndim, kind, wanted = _ARRAYS[key]
        if len(shape) != ndim or dtype.kind != kind:
            raise _Refused(f"{key!r} is a {shape} {dtype} array, not {wanted}")
        size, held = math.prod(shape) * dtype.itemsize, info.file_size
        if size != held - f.tell():
            raise _Refused(
                f"{key!r} declares {shape} {dtype} ({size} bytes), but its "
                f"member has {held - f.tell()} bytes after the header"
            )
        _check_size(key, shape, dtype)
    with zf.open(info) as f:  # again, from the start: numpy reads it all
        return npy.read_array(f, allow_pickle=False)
