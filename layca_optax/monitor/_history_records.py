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
from collections.abc import Iterator, Mapping
from typing import IO, Any

import jax
import numpy as np

from layca_optax import _checks as checks
from layca_optax.monitor._keys import split_slices


FORMAT = "layca_optax.RotationHistory"
STEP = "step"
MAX_FILE_BYTES = 256 * 2**20
"""The largest history file read (256 MiB), checked before reading."""
MAX_KEYS = 2**16
"""The most metric keys a history file may have."""
MAX_LINE_CHARS = 2**24
"""The longest line of a history CSV file (16 Mi characters)."""


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


class Table:
    """Steps (int64) and rows of float64 values, grown in place.

    The arrays grow by doubling with ``ndarray.resize`` (``realloc``, which
    moves no pages for large arrays), so they hold at most twice the rows
    added; :meth:`trim` then gives the rest back. No view of them is handed
    out (:attr:`steps` and :meth:`column` copy).
    """

    def __init__(self, width: int = 0) -> None:
        self.width, self.n = width, 0
        self._steps = np.zeros(0, np.int64)
        self._values = np.zeros((0, width), np.float64)

    def add(self, step: int, row: list[float]) -> None:
        """Appends a row of ``width`` values (the first sets ``width``)."""
        if self.n == 0:
            self.width = len(row)
            self._values = np.zeros((0, self.width), np.float64)
        if self.n == len(self._steps):
            cap = max(16, 2 * self.n)
            self._steps.resize(cap, refcheck=False)
            self._values.resize((cap, self.width), refcheck=False)
        self._steps[self.n] = step
        self._values[self.n] = row
        self.n += 1

    def trim(self) -> None:
        """Frees the room beyond the rows added."""
        self._steps.resize(self.n, refcheck=False)
        self._values.resize((self.n, self.width), refcheck=False)

    @property
    def last_step(self) -> int:
        """The last step added (the table must not be empty)."""
        return int(self._steps[self.n - 1])

    @property
    def steps(self) -> np.ndarray:
        """A copy of the steps."""
        return self._steps[: self.n].copy()

    def column(self, i: int) -> np.ndarray:
        """A copy of the values of column ``i``."""
        return self._values[: self.n, i].copy()

    def rows(self) -> list[list[float]]:
        """The values as lists of Python floats (for writing)."""
        return self._values[: self.n].tolist()


def check_step(step: Any, prior: int | None) -> int:
    """``step`` as an int in int64, larger than ``prior``; ``ValueError``
    saying what is wrong."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"the step must be an int, got {step!r}")
    if not -(2**63) <= step < 2**63:
        raise ValueError(f"the step must fit in int64, got {step}")
    if prior is not None and step <= prior:
        raise ValueError(f"the step must increase: got {step} after {prior}")
    return step


def check_keys(keys: list[str], first: list[str] | None) -> None:
    """``ValueError`` unless ``keys`` are those of the first record."""
    if first is not None and set(keys) != set(first):
        missing = sorted(set(first) - set(keys))
        extra = sorted(set(keys) - set(first))
        raise ValueError(
            f"the keys must be those of the first record: missing "
            f"{missing}, extra {extra}"
        )
    if len(keys) > MAX_KEYS:
        raise ValueError(f"{len(keys)} keys, more than {MAX_KEYS}")


def real(key: str, value: Any) -> float:
    """A JSON value as a float; ``ValueError`` unless a real number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    raise ValueError(f"{key!r} must be a real scalar, got {value!r}")


def parse_csv(f: IO[bytes]) -> tuple[list[str], Table]:
    """The keys and records of :func:`csv_text`'s format, read row by row
    from ``f`` (``where``: ``"line <n>"``); ``ValueError`` saying what is
    wrong."""
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    try:
        return _read_csv(csv.reader(_logical_lines(text)))
    finally:
        text.detach()  # ``f`` is the caller's to close


def _read_csv(reader: Any) -> tuple[list[str], Table]:
    """The keys and records of a ``csv.reader`` over a history."""
    try:
        header: list[str] = next((row for row in reader if row), [])
        if not header or header[0] != STEP:
            head = header[:3] if header else "an empty file"
            raise ValueError(f"no {STEP!r} column first (got {head})")
        if len(set(header)) != len(header):
            raise ValueError(f"a column name repeats in the header {header}")
        keys = header[1:]
        check_keys(keys, None)
        table = Table(len(keys))
        prior = None
        for line in reader:
            if line:
                n = reader.line_num
                _add_csv_row(table, line, len(header), n, prior)
                prior = table.last_step
    except csv.Error as err:
        raise ValueError(f"not valid CSV: {err}") from None
    return keys, table


def _add_csv_row(
    table: Table, line: list[str], width: int, n: int, prior: int | None
) -> None:
    """Adds one CSV row to ``table``; ``ValueError`` naming line ``n``."""
    if len(line) != width:
        raise ValueError(
            f"ragged rows: line {n} has {len(line)} fields, the header {width}"
        )
    try:
        step = check_step(int(line[0]), prior)
        table.add(step, [float(x) for x in line[1:]])
    except ValueError as err:
        raise ValueError(f"line {n}: {err}") from None


def _logical_lines(text: IO[str]) -> Iterator[str]:
    """The lines of ``text`` for ``csv.reader``; ``ValueError`` for a line
    longer than :data:`MAX_LINE_CHARS` or a row (lines joined inside
    quotes) of more than :data:`MAX_KEYS` + 1 fields, before ``csv``
    splits it."""
    commas = quotes = 0
    while line := text.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(f"a line longer than {MAX_LINE_CHARS} characters")
        commas, quotes = commas + line.count(","), quotes + line.count('"')
        if commas > MAX_KEYS:
            raise ValueError(f"a row of more than {MAX_KEYS + 1} fields")
        if quotes % 2 == 0:  # the row ends here
            commas = quotes = 0
        yield line


def parse_json(f: IO[bytes]) -> tuple[list[str], Table]:
    """The keys and records of :func:`json_text`'s format (``where``:
    ``"record <i>"``); ``ValueError`` saying what is wrong. Each record is
    moved into the table as soon as it is parsed."""
    text = f.read().decode("utf-8")  # a UnicodeDecodeError is a ValueError
    keys: list[str] = []
    table = Table()

    def record(pairs: list[tuple[str, Any]]) -> Any:
        fields = dict(pairs)
        if STEP not in fields:
            return fields  # not a record: checked below
        if len(fields) != len(pairs):
            raise ValueError(f"record {table.n}: a key repeats")
        metrics = [(k, v) for k, v in pairs if k != STEP]
        try:
            prior = table.last_step if table.n else None
            step = check_step(fields[STEP], prior)
            check_keys([k for k, _ in metrics], keys if table.n else None)
            if not table.n:
                keys.extend(k for k, _ in metrics)
            order = dict(metrics)
            table.add(step, [real(k, order[k]) for k in keys])
        except ValueError as err:
            raise ValueError(f"record {table.n}: {err}") from None
        return _RECORD

    try:
        data = json.loads(text, object_pairs_hook=record)
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
    for i, item in enumerate(records):
        if item is not _RECORD:
            raise ValueError(f"record {i} has no {STEP!r}")
    if len(records) != table.n:
        raise ValueError("a record outside the 'records' list")
    return keys, table


_RECORD = object()  # a record, moved into the table
PARSERS = {"json": parse_json, "csv": parse_csv}
