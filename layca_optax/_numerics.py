"""Per-layer reductions, NaN-free division and hyperparameter checks."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The axis rules live in _axes; these names are used as nx.* across modules.
from layca_optax._axes import (  # noqa: F401
    Axis,
    axes_per_leaf,
    axis_rules,
    check_axis,
    fan_in_axes,
    resolve_axes,
)
from layca_optax._masks import path_str  # noqa: F401
from layca_optax._shard_map import complete_sum


def reduction_dtype(dtype: Any) -> jnp.dtype:
    """At least float32: bf16/f16 leaves are reduced in float32."""
    return jnp.promote_types(dtype, jnp.float32)


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of ``dtype``."""
    return float(jnp.finfo(dtype).eps)


def layer_sum(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Sum over ``axes`` with kept dims (so it broadcasts against the leaf).

    Inside :func:`layca_optax.psum_layer_sums` (within ``jax.shard_map``),
    the local sums are completed over the mesh; elsewhere this is a sum.
    """
    return complete_sum(jnp.sum(x, axis=axes, keepdims=True))


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, and 0 where ``den == 0``; finite gradients everywhere."""
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` with a zero (not NaN or inf) gradient at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value (not a tracer inside jit/grad)."""
    return not any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)
    )


def check_scalar(
    value: Any,
    caller: str,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> None:
    """Raises ``ValueError`` naming ``caller(name=...)`` for a bad number.

    Traced values (inside ``optax.inject_hyperparams``' update) are skipped;
    they were checked when the optimizer was built.
    """
    if not is_concrete(value):
        return
    if isinstance(value, str | bytes | bool | np.bool_):
        raise ValueError(
            f"`{caller}({name}=...)` must be a real number, got {value!r}."
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{caller}({name}=...)` must be a real number, got {value!r}."
        ) from None
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
        subject = f"`{caller}({name}=...)`" + (f" ({what})" if what else "")
        raise ValueError(
            f"{subject} must be finite and in {bounds}, got {value!r}."
        )


def check_bool(value: Any, caller: str, name: str) -> None:
    """Raises ``ValueError`` naming ``caller(name=...)`` unless a bool."""
    if not isinstance(value, bool):
        raise ValueError(
            f"`{caller}({name}=...)` must be True or False, got {value!r}."
        )


def no_params_error(caller: str) -> ValueError:
    """The error raised when a transformation that needs params gets None."""
    return ValueError(
        f"`{caller}` needs the current parameters: call "
        "`tx.update(updates, state, params)` with `params` set "
        "(it was None)."
    )


_STATIC_ONLY = ("axis", "mask", "layer_order", "multipliers")


def check_not_scheduled(caller: str, names: Sequence[str] = _STATIC_ONLY):
    """``ValueError`` when ``caller`` is being built by
    ``optax.inject_hyperparams`` with one of ``names`` outside
    ``static_args``.

    ``inject_hyperparams`` turns every callable argument that is not in
    ``static_args`` into a schedule and passes its value at the step count
    instead (a callable ``axis`` or ``mask`` then silently becomes a
    constant computed from an integer). The optimizer cannot see that from
    its arguments, so this reads ``inject_hyperparams``' record of the
    schedules from the frame that builds the optimizer (``sched_hps`` of
    ``optax.schedules._inject``); with another optax layout it checks
    nothing.
    """
    try:
        frame = sys._getframe(2)  # caller's caller: the code building it
    except ValueError:  # called from outside Python code: nothing to read
        return
    if not frame.f_globals.get("__name__", "").startswith("optax.schedules"):
        return
    scheduled = frame.f_locals.get("sched_hps")
    if not isinstance(scheduled, dict):
        return
    bad = [name for name in names if name in scheduled]
    if bad:
        listed = ", ".join(repr(n) for n in bad)
        raise ValueError(
            f"`{caller}({bad[0]}=...)` got a callable under "
            "optax.inject_hyperparams, which calls it as a schedule of the "
            f"step count. Pass it as static: optax.inject_hyperparams("
            f"{caller}, static_args=({listed},))."
        )
