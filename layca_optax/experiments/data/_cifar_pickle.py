"""A pickle reader that unpickles nothing: it interprets the opcode stream.

``pickle.Unpickler`` with a restricted ``find_class`` still hands the
file's own state to NumPy's ``ndarray.__setstate__`` and
``dtype.__setstate__``, C code that trusts it (an object dtype and a short
list read past the end of the list: a segfault), and lets
``_reconstruct`` allocate whatever shape the file names. This reader walks
the opcodes (:func:`pickletools.genops`) and builds only dicts, lists,
tuples, bytes, str, int, float, bool and None itself; a NumPy array only
from the pickle's own bytes with a fixed-size numeric dtype, of exactly
as many bytes as its shape declares. Nothing from the file reaches a
``__setstate__``, a constructor or an object dtype.
"""

from __future__ import annotations

import io
import pickletools
from collections.abc import Callable
from typing import IO, Any

from layca_optax.experiments.data._cifar_arrays import (
    MAX_OBJECTS,
    RefusedPickle,
    Unbuilt,
    build_array,
    build_dtype,
    lookup,
    reduce,
)


class _Machine:
    """The pickle stack machine for plain data; see the module docstring."""

    def __init__(self, max_objects: int) -> None:
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.left = max_objects

    def count(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise RefusedPickle("more objects than the pickle may make")

    def push(self, value: Any) -> None:
        self.count()
        self.stack.append(value)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise RefusedPickle("stack underflow")
        return _done(self.stack.pop())

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise RefusedPickle("no MARK")
        start = self.marks.pop()
        items = [_done(v) for v in self.stack[start:]]
        del self.stack[start:]
        return items

    def put(self, key: int) -> None:
        if not self.stack:
            raise RefusedPickle("memo of an empty stack")
        self.count()
        value = self.memo[key] = self.stack[-1]
        if isinstance(value, Unbuilt):
            value.keys.append(key)

    def get(self, key: int) -> None:
        if key not in self.memo:
            raise RefusedPickle(f"memo key {key} is not set")
        self.push(self.memo[key])  # counted: GETs can fill a list

    def build(self) -> None:
        state = self.pop()
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) <= floor or not isinstance(self.stack[-1], Unbuilt):
            raise RefusedPickle("BUILD is allowed only on an array or dtype")
        unbuilt = self.stack[-1]
        if unbuilt.kind == "dtype":
            built: Any = build_dtype(unbuilt.value, state)
        else:
            built = build_array(state)
        self.stack[-1] = built
        for key in unbuilt.keys:
            if self.memo.get(key) is unbuilt:
                self.memo[key] = built
        unbuilt.keys.clear()

    def setitems(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, dict) or len(items) % 2:
            raise RefusedPickle("SETITEMS on a non-dict or odd items")
        self.count(len(items) // 2)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def append(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, list):
            raise RefusedPickle("APPENDS on a non-list")
        target.extend(items)


def _done(value: Any) -> Any:
    if isinstance(value, Unbuilt):
        raise RefusedPickle(f"a {value.kind} is used before its BUILD")
    return value


def _literal(m: _Machine, arg: Any) -> None:
    m.push(arg)


def _latin1(m: _Machine, arg: Any) -> None:  # py2 str: bytes, as CIFAR
    m.push(arg.encode("latin-1"))


def _op_table() -> dict[str, Callable[[_Machine, Any], None]]:
    def stack_global(m: _Machine, _: Any) -> None:
        name, module = m.pop(), m.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise RefusedPickle("STACK_GLOBAL needs two strings")
        m.push(lookup(module, name))

    def tuple_n(n: int) -> Callable[[_Machine, Any], None]:
        def op(m: _Machine, _: Any) -> None:
            items = [m.pop() for _ in range(n)][::-1]
            m.push(tuple(items))

        return op

    def setitem(m: _Machine, _: Any) -> None:
        value, key = m.pop(), m.pop()
        m.setitems(_top(m), [key, value])

    ops: dict[str, Callable[[_Machine, Any], None]] = {
        "PROTO": lambda m, a: None,
        "FRAME": lambda m, a: None,
        "STOP": lambda m, a: None,
        "MARK": lambda m, a: m.marks.append(len(m.stack)),
        "POP": lambda m, a: m.pop(),
        "POP_MARK": lambda m, a: None if m.pop_mark() else None,
        "DUP": lambda m, a: m.push(_top(m)),
        "GLOBAL": lambda m, a: m.push(lookup(*a.split(" ", 1))),
        "STACK_GLOBAL": stack_global,
        "REDUCE": lambda m, a: m.push(reduce(*reversed([m.pop(), m.pop()]))),
        "BUILD": lambda m, a: m.build(),
        "EMPTY_DICT": lambda m, a: m.push({}),
        "EMPTY_LIST": lambda m, a: m.push([]),
        "EMPTY_TUPLE": lambda m, a: m.push(()),
        "TUPLE1": tuple_n(1),
        "TUPLE2": tuple_n(2),
        "TUPLE3": tuple_n(3),
        "TUPLE": lambda m, a: m.push(tuple(m.pop_mark())),
        "LIST": lambda m, a: m.push(m.pop_mark()),
        "DICT": lambda m, a: m.push(_pairs(m, m.pop_mark())),
        "SETITEM": setitem,
        "SETITEMS": lambda m, a: _into(m, m.setitems),
        "APPEND": lambda m, a: _append(m),
        "APPENDS": lambda m, a: _into(m, m.append),
        "PUT": lambda m, a: m.put(a),
        "BINPUT": lambda m, a: m.put(a),
        "LONG_BINPUT": lambda m, a: m.put(a),
        "MEMOIZE": lambda m, a: m.put(len(m.memo)),
        "GET": lambda m, a: m.get(a),
        "BINGET": lambda m, a: m.get(a),
        "LONG_BINGET": lambda m, a: m.get(a),
    }
    ops["SHORT_BINSTRING"] = ops["BINSTRING"] = _latin1
    return ops


def _top(m: _Machine) -> Any:
    """The top of the stack (above the last MARK), left there."""
    if len(m.stack) <= (m.marks[-1] if m.marks else 0):
        raise RefusedPickle("stack underflow")
    return _done(m.stack[-1])


def _append(m: _Machine) -> None:
    item = m.pop()
    m.append(_top(m), [item])


def _into(m: _Machine, fn: Callable[[Any, list[Any]], None]) -> None:
    items = m.pop_mark()
    fn(_top(m), items)


def _pairs(m: _Machine, items: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    m.setitems(out, items)
    return out


_OPS = _op_table()
_OPS.update(
    dict.fromkeys(
        [
            *("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT"),
            *("SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "SHORT_BINUNICODE"),
            *("BINUNICODE", "BINUNICODE8"),
        ],
        _literal,
    )
)
_OPS["NONE"] = lambda m, a: m.push(None)
_OPS["NEWTRUE"] = lambda m, a: m.push(True)
_OPS["NEWFALSE"] = lambda m, a: m.push(False)


def read_pickle(file: IO[bytes] | bytes, max_objects: int = MAX_OBJECTS) -> Any:
    """The plain data and numeric arrays of a pickle, made without unpickling.

    Args:
      file: the pickle's bytes, or a binary file at its start.
      max_objects: the most objects (and memo entries) it may make: a
        1-byte opcode makes a 56-byte list, so this bounds memory.

    Returns:
      The object.

    Raises:
      RefusedPickle: an opcode, global, call, dtype or state that is not
        plain data or a numeric array over its own bytes; a corrupt stream
        (a ``pickle.UnpicklingError``).
    """
    stream = io.BytesIO(file) if isinstance(file, bytes) else file
    m = _Machine(max_objects)
    try:
        for op, arg, _ in pickletools.genops(stream):
            handler = _OPS.get(op.name)
            if handler is None:
                raise RefusedPickle(f"opcode {op.name} is not allowed")
            handler(m, arg)
    except RefusedPickle:
        raise
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        ArithmeticError,
    ) as err:
        raise RefusedPickle(f"not a pickle ({err})") from err
    if len(m.stack) != 1 or m.marks:
        raise RefusedPickle("the pickle does not end with one object")
    return _done(m.stack[0])
