"""RotationHistory's records: the values of one, and the files of all.

A record is a step and ``{key: float}``; :func:`record_values` checks and
converts what :meth:`RotationHistory.append` is given. The JSON and CSV
formats are written by :func:`json_text` and :func:`csv_text` and read by
:data:`PARSERS`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from layca_optax import _checks as checks
from layca_optax._io import open_regular_file
from layca_optax.monitor._keys import split_slices


FORMAT = "layca_optax.RotationHistory"
STEP = "step"
MAX_FILE_BYTES = 256 * 2**20
"""The largest history file read (256 MiB), checked before reading."""


def read_text(path: Any, caller: str) -> str:
    """The UTF-8 text of ``path``, a regular file of at most
    :data:`MAX_FILE_BYTES`; a ``ValueError`` naming ``caller`` and the path
    for a file that is not regular or larger, one saying what is wrong
    (cannot be read, not UTF-8) for the caller to prefix with the path."""
    try:
        with open_regular_file(
            path, MAX_FILE_BYTES, caller, "a history file"
        ) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ValueError(f"cannot read it ({err.strerror or err})") from None
    return raw.decode("utf-8")  # a UnicodeDecodeError is a ValueError


def record_values(metrics: Any) -> dict[str, float]:
    """``metrics`` as ``{key: float}``, an array value split into one key
    per entry (:func:`split_slices`); ``ValueError`` naming the ``metrics``
    argument for a bad key or a value that is not real."""
    arg = checks.arg("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(
            f"{arg} must be a non-empty mapping, got {type(metrics).__name__}."
        )
    keys = list(metrics)
    bad = [k for k in keys if not isinstance(k, str) or k == STEP]
    if bad:
        raise ValueError(
            f"{arg} keys must be str other than {STEP!r}, got {bad[0]!r}."
        )
    arrays = [np.asarray(v) for v in jax.device_get(list(metrics.values()))]
    for key, a in zip(keys, arrays, strict=True):
        if a.dtype.kind in "bcmMOSUV":
            raise ValueError(
                f"{arg} {key!r} must be a real scalar or an array of real "
                f"numbers, got {a.dtype} of shape {a.shape}."
            )
    values = split_slices(zip(keys, arrays, strict=True))
    if not values:
        raise ValueError(f"{arg} holds only empty arrays: no value to record.")
    return {k: float(v) for k, v in values.items()}


def json_text(steps: list[int], keys: list[str], rows: list[list]) -> str:
    """``{"format": FORMAT, "records": [{"step": ..., <key>: <value>, ...},
    ...]}``, one record per step."""
    records = [
        {STEP: s, **dict(zip(keys, row, strict=True))}
        for s, row in zip(steps, rows, strict=True)
    ]
    return json.dumps({"format": FORMAT, "records": records}, indent=1) + "\n"


def csv_text(steps: list[int], keys: list[str], rows: list[list]) -> str:
    """A header ``step,<key>,...`` and one row per step, the values as
    Python's ``repr`` of the floats."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([STEP, *keys])
    for step, row in zip(steps, rows, strict=True):
        writer.writerow([step, *map(repr, row)])
    return out.getvalue()


def parse_json(text: str) -> list[tuple[str, Any, dict]]:
    """``(where, step, metrics)`` per record of :func:`json_text`'s format
    (``where``: ``"record <i>"``); ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        raise ValueError(
            "not a history: JSON nested too deeply (a history nests 3 deep)"
        ) from None
    ok = isinstance(data, dict) and data.get("format") == FORMAT
    records = data.get("records") if ok else None
    if not isinstance(records, list):
        raise ValueError(
            f"not an object with 'format': {FORMAT!r} and a 'records' list"
        )
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or STEP not in record:
            raise ValueError(f"record {i} has no {STEP!r}")
        metrics = {k: v for k, v in record.items() if k != STEP}
        rows.append((f"record {i}", record[STEP], metrics))
    return rows


def parse_csv(text: str) -> list[tuple[str, Any, dict]]:
    """``(where, step, metrics)`` per row of :func:`csv_text`'s format
    (``where``: ``"line <n>"``); ``ValueError`` saying what is wrong."""
    try:
        lines = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as err:
        raise ValueError(f"not valid CSV: {err}") from None
    if not lines or lines[0][0] != STEP:
        head = lines[0][:3] if lines else "an empty file"
        raise ValueError(f"no {STEP!r} column first (got {head})")
    header = lines[0]
    if len(set(header)) != len(header):
        raise ValueError(f"a column name repeats in the header {header}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise ValueError(
                f"ragged rows: line {n} has {len(line)} fields, the header "
                f"{len(header)}"
            )
        try:
            step, values = int(line[0]), [float(x) for x in line[1:]]
        except ValueError as err:
            raise ValueError(f"line {n}: {err}") from None
        rows.append(
            (f"line {n}", step, dict(zip(header[1:], values, strict=True)))
        )
    return rows


PARSERS = {"json": parse_json, "csv": parse_csv}
