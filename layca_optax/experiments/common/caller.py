"""The name the app's errors give: the function the user called.

The loaders and the training functions are decorated with :func:`public`
(or run their checks within :func:`calling`); their messages read
:func:`caller`, so that ``load_mnist`` reports ``load_mnist`` although the
error comes from a helper it shares with ``load_cifar``. The outermost
call wins. (The library's functions name themselves the same way.)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar


_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "layca_optax_experiments_caller", default=None
)
_F = TypeVar("_F", bound=Callable[..., Any])


def caller() -> str:
    """The function the user called (``"layca_optax"`` outside one)."""
    return _NAME.get() or "layca_optax"


def arg(name: str) -> str:
    """The argument ``name`` of :func:`caller`: ```train(epochs=...)```."""
    return f"`{caller()}({name}=...)`"


@contextlib.contextmanager
def calling(name: str) -> Iterator[None]:
    """Within it, :func:`caller` is ``name`` (unless an outer call set it)."""
    token = None if _NAME.get() else _NAME.set(name)
    try:
        yield
    finally:
        if token is not None:
            _NAME.reset(token)


def public(fn: _F) -> _F:
    """Decorator: while ``fn`` runs, :func:`caller` is its name."""

    @functools.wraps(fn)
    def named(*args: Any, **kwargs: Any) -> Any:
        with calling(fn.__name__):
            return fn(*args, **kwargs)

    return named  # type: ignore[return-value]
