"""The arrays and dtypes a pickle may hold, built without NumPy's
``__setstate__``: numeric dtypes only, over exactly their own bytes.

NumPy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` and a
BUILD with ``(1, shape, dtype, fortran, data)``, a dtype as
``dtype(code, align, copy)`` and a BUILD with its byte order. Here each
call and state is checked and the object made by this code: the file
chooses none of the C calls.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np


class RefusedPickle(pickle.UnpicklingError):
    """A pickle holds something other than plain data and numeric arrays."""


def _reconstruct_stub(*args: Any) -> Any:  # a marker, never called
    raise RefusedPickle("_reconstruct is interpreted, not called")


_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stub,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stub,
}
# Fixed-size numeric dtypes only: no objects, no strings, no bool (a bool
# array of arbitrary bytes is undefined), no records, no datetimes.
_NUMERIC = {f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8)} | {
    "f4",
    "f8",
}
_BYTE_ORDERS = {"<", ">", "|", "="}
MAX_DIMS = 32
MAX_OBJECTS = 2**20
"""Objects (and memo entries) a pickle may make by default."""


class Unbuilt:
    """An array or dtype between its REDUCE and its BUILD."""

    def __init__(self, kind: str, value: Any) -> None:
        self.kind, self.value = kind, value
        self.keys: list[int] = []  # where the memo holds it


def _text(value: Any) -> str:
    """A py2 string (bytes here) or str, as str; else refused."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise RefusedPickle(f"expected a string, got {type(value).__name__}")


def _dtype(args: Any) -> Unbuilt:
    """``numpy.dtype(code, align, copy)`` for a numeric ``code`` only."""
    if not (isinstance(args, tuple) and len(args) == 3):
        raise RefusedPickle("numpy.dtype needs (code, align, copy)")
    code = _text(args[0])
    if code not in _NUMERIC:
        raise RefusedPickle(f"dtype {code[:16]!r} is not a numeric dtype")
    return Unbuilt("dtype", np.dtype(code))


def build_dtype(dtype: np.dtype, state: Any) -> np.dtype:
    """The dtype with the byte order of its pickled state, checked."""
    if not (isinstance(state, tuple) and len(state) == 8):
        raise RefusedPickle("a dtype's state is not an 8-tuple")
    version, order, *rest = state
    if version not in (3, 4) or _text(order) not in _BYTE_ORDERS:
        raise RefusedPickle(f"dtype state {state[:2]!r} is not numeric")
    if rest != [None, None, None, -1, -1, 0]:
        raise RefusedPickle("a numeric dtype has no names, fields or flags")
    order = _text(order)
    if order in "<>":
        return dtype.newbyteorder("<" if order == "<" else ">")
    return dtype


def _reconstruct(args: Any) -> Unbuilt:
    """``_reconstruct(ndarray, (0,), b'b')``, as NumPy writes it, only."""
    ok = (
        isinstance(args, tuple)
        and len(args) == 3
        and args[0] is np.ndarray
        and args[1] == (0,)
        and args[2] in (b"b", "b")
    )
    if not ok:
        raise RefusedPickle(
            "_reconstruct is allowed only as (numpy.ndarray, (0,), b'b')"
        )
    return Unbuilt("array", np.empty(0, np.int8))


def build_array(state: Any) -> np.ndarray:
    """An array over the pickle's own bytes: ``(1, shape, dtype,
    fortran, data)`` with ``len(data)`` exactly the shape's bytes."""
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise RefusedPickle("an array's state is not (1, shape, ...)")
    _, shape, dtype, fortran, data = state
    if not isinstance(dtype, np.dtype) or type(fortran) is not bool:
        raise RefusedPickle("an array's state has no numeric dtype")
    if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS):
        raise RefusedPickle("an array's shape is not a tuple")
    size = 1
    for n in shape:
        if type(n) is not int or n < 0:
            raise RefusedPickle("an array's shape is not of sizes")
        size *= n
    if not isinstance(data, bytes) or size * dtype.itemsize != len(data):
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise RefusedPickle(
            f"an array of shape {shape} and dtype {dtype} needs "
            f"{size * dtype.itemsize} bytes, has {got}: not a bytes-backed "
            "array of its own bytes"
        )
    return np.ndarray(shape, dtype, buffer=data, order="F" if fortran else "C")


def reduce(fn: Any, args: Any) -> Any:
    """REDUCE: ``fn(*args)`` for ``_reconstruct`` and ``numpy.dtype``
    only, checked; an :class:`Unbuilt` awaiting its BUILD."""
    if fn is _reconstruct_stub:
        return _reconstruct(args)
    if fn is np.dtype:
        return _dtype(args)
    if fn is np.ndarray:
        raise RefusedPickle(
            "numpy.ndarray(...) called directly: not a bytes-backed array "
            "of the pickle's own bytes"
        )
    raise RefusedPickle(f"calling a {type(fn).__name__} is not allowed")


def lookup(module: str, name: str) -> Any:
    """The allowed global ``module.name``; any other is refused."""
    try:
        return _GLOBALS[(module, name)]
    except KeyError:
        raise RefusedPickle(f"global {module}.{name} is not allowed") from None
