"""RotationHistory's file parsers, and the splitting of array values."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from layca_optax import _checks as checks
from layca_optax.monitor._rotation_sums import slice_items


FORMAT = "layca_optax.RotationHistory"
STEP = "step"


def flatten(values: list, keys: list) -> dict[str, float]:
    """``{key: float}``, an array value split into one entry per element,
    named ``key/i`` (one axis), ``key/i/j`` (two)... as
    :func:`rotation_metrics` names slices; ``ValueError`` for a value that
    is not real or a name that repeats (naming the ``metrics`` argument)."""
    where = checks.arg("metrics")
    out: dict[str, float] = {}
    for key, value in zip(keys, values, strict=True):
        a = np.asarray(value)
        if a.dtype.kind in "bcmMOSUV":
            raise ValueError(
                f"{where} {key!r} must be a real scalar or an array of real "
                f"numbers, got {a.dtype} of shape {a.shape}."
            )
        for name, x in slice_items(key, a):
            if name in out:
                raise ValueError(
                    f"{where} names {name!r} twice (a key, and an entry of "
                    "an array value split into per-slice keys)."
                )
            out[name] = float(x)
    return out


def parse_json(text: str) -> list[tuple[str, Any, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None
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
