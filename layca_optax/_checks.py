"""Argument checks of the public functions, and the name their errors give.

Every public function is decorated with :func:`public`. While it runs, and
while the ``init`` and ``update`` of a transformation it returns run,
:func:`caller` is its name; the outermost public call wins, so
``layca(axis=5)`` reports ``layca(axis=...)`` although ``layca`` builds its
steps from other public functions, and ``scale_by_layca(axis=5)`` reports
``scale_by_layca(axis=...)``. The checks here, and every error raised below
a public function, read the name from :func:`caller`: no internal helper
takes a ``caller`` argument.

The checks raise ``ValueError`` with the argument and the value (a bad type
included: one error type for every bad argument).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax


_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "layca_optax_caller", default=None
)
_F = TypeVar("_F", bound=Callable[..., Any])


def caller() -> str:
    """The public function the user called (``"layca_optax"`` outside one)."""
    return _CALLER.get() or "layca_optax"


def arg(name: str) -> str:
    """```caller(name=...)```, the way every message names an argument."""
    return f"`{caller()}({name}=...)`"


@contextlib.contextmanager
def calling(name: str) -> Iterator[None]:
    """:func:`caller` is ``name`` inside, unless an outer public call runs."""
    token = _CALLER.set(name) if _CALLER.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _CALLER.reset(token)


_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "layca_optax_checked", default=False
)


@contextlib.contextmanager
def checked() -> Iterator[None]:
    """Inside, :func:`checking` is False: a public factory that has checked
    its arguments builds its steps from other public factories, which then
    do not check the same arguments again (the checks of their ``init`` and
    ``update`` still run)."""
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def checking() -> bool:
    """Whether a public factory checks its arguments: False inside
    :func:`checked`, where the factory that called it already has."""
    return not _CHECKED.get()


def _named(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with calling(name):
            return fn(*args, **kwargs)

    return wrapper


def public(fn: _F) -> _F:
    """Decorator of a public function: errors raised while it runs, and in
    the ``init``/``update`` of a transformation it returns, name it."""
    name = fn.__name__
    named = _named(name, fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = named(*args, **kwargs)
        if isinstance(out, optax.GradientTransformation):
            out = out._replace(
                init=_named(name, out.init), update=_named(name, out.update)
            )
        return out

    return wrapper  # type: ignore[return-value]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value (not a tracer inside jit/grad)."""
    return not any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)
    )


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> None:
    """``ValueError`` naming ``caller(name=...)`` unless ``value`` is a
    finite real number in the bounds. Traced values (inside
    ``optax.inject_hyperparams``' update) are skipped: they were checked
    when the optimizer was built."""
    if not is_concrete(value):
        return
    number = f"{arg(name)} must be a real number, got {value!r}."
    if isinstance(value, str | bytes | bool | np.bool_):
        raise ValueError(number)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(number) from None
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        bounds = f"{'(' if low_open or low is None else '['}{lo}, {hi}"
        bounds += ")" if high_open or high is None else "]"
        subject = arg(name) + (f" ({what})" if what else "")
        raise ValueError(
            f"{subject} must be finite and in {bounds}, got {value!r}."
        )


def check_bool(value: Any, name: str) -> None:
    """``ValueError`` naming ``caller(name=...)`` unless a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{arg(name)} must be True or False, got {value!r}.")


def check_count(value: Any, name: str, *, what: str = "") -> None:
    """``ValueError`` naming ``caller(name=...)`` unless an int >= 1."""
    try:
        ok = not isinstance(value, bool) and operator.index(value) > 0
    except TypeError:  # not an integer
        ok = False
    if not ok:
        extra = f" ({what})" if what else ""
        raise ValueError(
            f"{arg(name)} must be an int >= 1{extra}, got {value!r}."
        )


def check_key(key: Any, name: str = "key") -> None:
    """``ValueError`` naming ``caller(key=...)`` unless ``key`` is one JAX
    PRNG key: typed (``jax.random.key``) or raw uint32
    (``jax.random.PRNGKey``)."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is None or shape is None:
        got = repr(key)
    elif jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
        got = f"an array of {shape} keys"
    elif dtype == jnp.uint32 and tuple(shape) == (2,):
        return
    else:
        got = f"an array of shape {shape} and dtype {dtype}"
    raise ValueError(
        f"{arg(name)} must be one JAX PRNG key, jax.random.key(seed) (or a "
        f"legacy jax.random.PRNGKey(seed)), got {got}."
    )


def check_transformation(tx: Any, name: str) -> None:
    """``ValueError`` unless ``tx`` is None or has ``init`` and ``update``."""
    if tx is not None and not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(
            f"{arg(name)} must be an optax GradientTransformation or None, "
            f"got {tx!r}."
        )


MAX_RATE = 1e6
"""The largest learning rate: ``tan`` of the angle per step, 89.99994
degrees. Larger rates turn no further, and their squares and products with
a direction overflow float32 in the per-layer terms."""


def check_learning_rate(learning_rate: Any) -> None:
    """``ValueError`` for a learning rate that is not a real number in ``[0,
    MAX_RATE]`` or a schedule, or a schedule whose value at step 0 is not.

    (A schedule that turns negative later gives no update from then on:
    Layca's step has no sign to flip. This is documented, not checked.)
    """
    if not callable(learning_rate):
        check_scalar(learning_rate, "learning_rate", low=0.0, high=MAX_RATE)
        return
    try:
        first = learning_rate(0)
    except TypeError as err:  # a callable of another signature
        raise ValueError(
            f"{arg('learning_rate')} must be a number or an optax schedule, "
            "a function of the step count (`lambda count: ...`); calling "
            f"it with the count 0 failed: {err}."
        ) from None
    except Exception:  # noqa: BLE001 (a schedule that needs a traced count)
        return
    if jnp.ndim(first) != 0:
        raise ValueError(
            f"{arg('learning_rate')}: the schedule must return a scalar, got "
            f"a value of shape {jnp.shape(first)} at step 0."
        )
    what = "the schedule's value at step 0"
    check_scalar(first, "learning_rate", low=0.0, high=MAX_RATE, what=what)


def no_params_error() -> ValueError:
    """The error of a transformation that needs params and got None."""
    return ValueError(
        f"`{caller()}` needs the current parameters: call "
        "`tx.update(updates, state, params)` with `params` set "
        "(it was None)."
    )


def check_prefix(prefix: Any) -> None:
    """``ValueError`` naming the ``prefix`` argument unless a str."""
    if not isinstance(prefix, str):
        raise ValueError(
            f"{arg('prefix')} must be a str (prepended to every "
            f"key), got {prefix!r}."
        )
