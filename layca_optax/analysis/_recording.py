"""A training run's per-step, per-layer rotation rates (AdaptCopy's input).

:func:`rotation_rate_row` gives one step's rates, from any optimizer's
train step; :class:`RotationRecording` holds them for a run, saved and
loaded without pickle. :func:`adapt_copy` replays a recording in Layca.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks
from layca_optax._io import atomic_write, open_regular_file
from layca_optax._masks import leaf_paths
from layca_optax.analysis._recording_file import (
    MAX_RECORDING_BYTES,
    UNREADABLE,
    Refused,
    read_npz,
)
from layca_optax.monitor import rotation_rate


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
      >>> layca_optax.analysis.rotation_rate_row(new, old)
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
      >>> row = layca_optax.analysis.rotation_rate_row(new, old)
      >>> rows = [row] * 3  # 3 steps
      >>> rec = layca_optax.analysis.RotationRecording.from_rows(old, rows)
      >>> rec.paths, rec.rates.shape
      (('w',), (3, 1))

      Saved and loaded without pickle:

      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "rates.npz")
      >>> rec.save(path)
      >>> layca_optax.analysis.RotationRecording.load(path).rates[:, 0].round(4)
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
                paths, rates = read_npz(f)
        except Refused as err:
            raise ValueError(f"{where}: {err}.") from None
        except UNREADABLE as err:
            raise ValueError(
                f"{where}: not a readable .npz archive "
                f"({type(err).__name__}: {err})."
            ) from None
        try:
            return cls(tuple(str(p) for p in paths), rates)
        except ValueError as err:  # e.g. a path twice
            raise ValueError(f"{where}: {err}") from None
