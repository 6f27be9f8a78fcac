"""A host-side record of rotation metrics over training, as JSON or CSV."""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax._io import FileRefused, atomic_write_text, open_regular_file
from layca_optax.monitor._history_records import (
    MAX_FILE_BYTES,
    MAX_KEYS,
    PARSERS,
    Table,
    csv_text,
    json_text,
    record_values,
)


PathLike = str | os.PathLike
UNITS = ("step", "epoch")


class RotationHistory:
    """Per-step or per-epoch rotation metrics, kept on the host.

    Append the dicts of :func:`rotation_metrics` or :func:`tracked_metrics`
    (their arrays are fetched and turned into Python floats); every record
    has the same keys, in the order of the first, and steps increase. An
    array value is split into one key per entry, named as
    :func:`rotation_metrics` names slices: ``{"rate/h/kernel": [a, b]}``
    becomes ``"rate/h/kernel/0"`` and ``"rate/h/kernel/1"`` (``.../i/j`` for
    two axes), so per-slice values save, load and plot as any other. Save
    and load as JSON or CSV (one row per record: ``step``, then the
    metric keys); writes are atomic (a temporary file in the same folder,
    then ``os.replace``), and loading checks the file, raising
    ``ValueError`` with the path and what is wrong (a missing file, one
    that is not a regular file or is over 256 MiB, JSON nested too deeply,
    a step past int64...). Non-finite values are kept (``NaN``/``Infinity``
    in JSON, as Python's ``json`` writes them). ``unit`` (``"step"``,
    ``"epoch"`` or None: not said) is what the records count; the plots
    label their x-axis with it ("Step" when None). Files do not store it:
    set it after loading.

    Args:
      unit: ``"step"``, ``"epoch"`` or None.

    Example:
      >>> import layca_optax
      >>> history = layca_optax.RotationHistory(unit="epoch")
      >>> history.append(1, {"rotation/Conv_0": 0.1, "rotation/Dense_0": 0.3})
      >>> history.append(2, {"rotation/Conv_0": 0.2, "rotation/Dense_0": 0.5})
      >>> history.steps, history.layers("rotation/")
      (array([1, 2]), ['Conv_0', 'Dense_0'])
      >>> history.as_array("rotation/Dense_0")
      array([0.3, 0.5])

      Saved and loaded as CSV (or JSON with ``save_json``/``load_json``):

      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "rotation.csv")
      >>> history.save_csv(path)
      >>> layca_optax.RotationHistory.load_csv(path).keys
      ('rotation/Conv_0', 'rotation/Dense_0')

      Array values (one per stacked layer, e.g. from
      ``layer_rotation(..., axis=(-2, -1))``) get one key per entry:

      >>> import numpy as np
      >>> stacked = layca_optax.RotationHistory()
      >>> stacked.append(1, {"rotation/h/kernel": np.array([0.1, 0.2])})
      >>> stacked.keys
      ('rotation/h/kernel/0', 'rotation/h/kernel/1')

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 3
      (layer rotation curves, recorded once per epoch).
    """

    @checks.calling("RotationHistory")
    def __init__(self, *, unit: str | None = None) -> None:
        self.unit = unit
        self._keys: list[str] = []
        self._table = Table()

    def __len__(self) -> int:
        return self._table.n

    def __repr__(self) -> str:
        return f"RotationHistory({len(self)} records, {len(self._keys)} keys)"

    @property
    def unit(self) -> str | None:
        """What a step counts: ``"step"``, ``"epoch"`` or None (settable)."""
        return self._unit

    @unit.setter
    @checks.calling("RotationHistory")
    def unit(self, unit: str | None) -> None:
        if unit is not None and unit not in UNITS:
            raise ValueError(
                f"{checks.arg('unit')} must be 'step', 'epoch' or None (not "
                f"said), got {unit!r}."
            )
        self._unit = unit

    @property
    def steps(self) -> np.ndarray:
        """The recorded steps (or epochs), increasing, as an int64 array."""
        return self._table.steps

    @property
    def keys(self) -> tuple[str, ...]:
        """The metric keys, in the order of the first record (a tuple)."""
        return tuple(self._keys)

    @checks.calling("RotationHistory.append")
    def append(self, step_or_epoch: int, metrics: Mapping[str, Any]) -> None:
        """Adds one record: a step (or epoch) and its metrics.

        Args:
          step_or_epoch: an int (within int64), larger than the last one
            appended.
          metrics: a mapping from str keys (not ``"step"``) to real
            numbers: floats, NumPy or JAX scalars, or arrays, which are
            split into one key per entry (``key/i``, ``key/i/j``...). The
            first record sets the keys; later ones must have the same.

        Returns:
          None. Raises ``ValueError`` (nothing is appended) for a step that
          does not increase, different keys, or a value that is not real.
        """
        step = self._check_step(step_or_epoch)
        values = record_values(metrics)
        keys = list(values)
        if len(self) and set(keys) != set(self._keys):
            missing = sorted(set(self._keys) - set(keys))
            extra = sorted(set(keys) - set(self._keys))
            raise ValueError(
                f"{checks.arg('metrics')} at step {step} must have the keys "
                f"of the first record: missing {missing}, extra {extra}."
            )
        if len(keys) > MAX_KEYS:
            raise ValueError(
                f"{checks.arg('metrics')} has {len(keys)} keys, more than "
                f"the {MAX_KEYS} a history file may have."
            )
        order = self._keys if len(self) else keys
        self._table.add(step, [values[k] for k in order])
        self._keys = order

    def _check_step(self, step_or_epoch: Any) -> int:
        try:
            step = operator.index(step_or_epoch)
        except TypeError:
            step = None
        if step is None or isinstance(step_or_epoch, bool):
            raise ValueError(
                f"{checks.arg('step_or_epoch')} must be an int, "
                f"got {step_or_epoch!r}."
            )
        if not -(2**63) <= step < 2**63:
            raise ValueError(
                f"{checks.arg('step_or_epoch')} must fit in int64, got {step}."
            )
        if len(self) and step <= self._table.last_step:
            raise ValueError(
                f"{checks.arg('step_or_epoch')} must increase: got {step} "
                f"after {self._table.last_step}."
            )
        return step

    @checks.calling("RotationHistory.as_array")
    def as_array(self, key: str) -> np.ndarray:
        """The values of one metric over the records, as a float64 array.

        Args:
          key: a metric key, e.g. ``"rotation/Conv_0/kernel"``.

        Returns:
          An array with one value per step.
        """
        if key not in self._keys:
            raise ValueError(
                f"{checks.arg('key')}: no metric {key!r}; "
                f"the keys are {self._keys}."
            )
        return self._table.column(self._keys.index(key))

    @checks.calling("RotationHistory.layers")
    def layers(self, prefix: str) -> list[str]:
        """The names after ``prefix`` of the keys that start with it.

        The order is the keys' order: for the metric dicts, the params'
        leaf order (sorted keys, so ``Conv_10`` before ``Conv_2``), not
        necessarily the forward order.

        Args:
          prefix: e.g. ``"rotation/"`` or ``"track/rate/"``.

        Returns:
          The layer names, e.g. ``["Conv_0/kernel", "Dense_0/kernel"]``.
        """
        names = [k[len(prefix) :] for k in self._keys if k.startswith(prefix)]
        if not names:
            raise ValueError(
                f"{checks.arg('prefix')}: no key starts with "
                f"{prefix!r}; the keys are {self._keys}."
            )
        return names

    def _check_nonempty(self) -> None:
        if not len(self):
            raise ValueError(
                f"`{checks.caller()}`: the history is empty; append records "
                "first."
            )

    @checks.calling("RotationHistory.save_json")
    def save_json(self, path: PathLike) -> None:
        """Writes the history as JSON, atomically.

        Args:
          path: the file to write; its folder must exist.

        Returns:
          None. ``{"format": "layca_optax.RotationHistory", "records":
          [{"step": ..., <key>: <value>, ...}, ...]}`` is written.
        """
        self._check_nonempty()
        steps, rows = self._table.steps.tolist(), self._table.rows()
        atomic_write_text(path, json_text(steps, self._keys, rows))

    @checks.calling("RotationHistory.save_csv")
    def save_csv(self, path: PathLike) -> None:
        """Writes the history as CSV, atomically: ``step``, then the keys.

        Args:
          path: the file to write; its folder must exist.

        Returns:
          None. A header ``step,<key>,...`` and one row per record are
          written, values as Python's ``repr`` of the floats.
        """
        self._check_nonempty()
        steps, rows = self._table.steps.tolist(), self._table.rows()
        atomic_write_text(path, csv_text(steps, self._keys, rows))

    @classmethod
    def _load(cls, path: PathLike, fmt: str) -> RotationHistory:
        """Reads a ``fmt`` (``"json"`` or ``"csv"``) file; its errors name
        ``RotationHistory.load_<fmt>`` and the path."""
        caller = f"RotationHistory.load_{fmt}"
        cap = MAX_FILE_BYTES
        try:
            with open_regular_file(path, cap, caller, "a history file") as f:
                keys, table = PARSERS[fmt](f)
            if not table.n:
                raise ValueError("no records")
        except FileRefused:
            raise
        except OSError as err:
            raise ValueError(
                f"`{caller}`: {os.fspath(path)}: cannot read it "
                f"({err.strerror or err})"
            ) from None
        except ValueError as err:  # and UnicodeDecodeError
            raise ValueError(f"`{caller}`: {os.fspath(path)}: {err}") from None
        table.trim()
        history = cls()
        history._keys, history._table = keys, table
        return history

    @classmethod
    def load_json(cls, path: PathLike) -> RotationHistory:
        """Reads a history written by :meth:`save_json`.

        Each record is moved into float64/int64 arrays as soon as it is
        parsed. Peak memory: the file's bytes and its decoded text (about
        twice the file for ASCII, which ``save_json`` writes; at most five
        times for text beyond the Basic Multilingual Plane), plus the
        arrays: measured at 2.0x the file's size.

        Args:
          path: the JSON file: a regular file (or a symbolic link to one;
            a FIFO, device or folder is refused before it is opened) of at
            most 256 MiB, with at most 2**16 keys.

        Returns:
          The history.

        Raises:
          ValueError: naming the file and the problem: it cannot be read
            (missing, a folder, not a regular file), is larger than the
            cap, is not UTF-8 JSON of this format (or nests too deeply), or
            a record is invalid.
        """
        return cls._load(path, "json")

    @classmethod
    def load_csv(cls, path: PathLike) -> RotationHistory:
        """Reads a history written by :meth:`save_csv`.

        The file is read row by row into float64/int64 arrays grown in
        place; a line is at most 2**24 characters and a row at most 2**16
        keys, checked before ``csv`` splits it. Peak memory: at most twice
        the arrays loaded (8 bytes per value and per step), plus one row.

        Args:
          path: the CSV file: a header ``step,<key>,...``, a row per record;
            a regular file (or a symbolic link to one; a FIFO, device or
            folder is refused before it is opened) of at most 256 MiB.

        Returns:
          The history.

        Raises:
          ValueError: naming the file and the problem: it cannot be read
            (missing, a folder, not a regular file), is larger than the
            cap, is not UTF-8 CSV of this format, a line or row is longer
            than the limits, or a row is invalid.
        """
        return cls._load(path, "csv")
