"""Per-layer reductions, NaN-free division and hyperparameter checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax._shard_map import complete_sum


Axis: TypeAlias = (
    None | int | Sequence[int] | Callable[[Any], None | int | Sequence[int]]
)
"""Axes a layer's norm reduces over.

``None`` reduces over the whole leaf (one norm per leaf, as in the paper). An
int or a tuple of ints reduces over those axes only, so that each slice along
the remaining axes is a layer of its own: ``axis=0`` on a ``(fan_in, fan_out)``
Dense kernel gives one norm per output unit (as Nero does); ``axis=(1, 2)`` on
a stacked ``(num_layers, fan_in, fan_out)`` kernel gives one norm per entry of
the stacked axis. A callable receives each leaf and returns one of the above,
e.g. :func:`layca_optax.fan_in_axes`.
"""


def fan_in_axes(leaf: Any) -> tuple[int, ...]:
    """Axis rule giving one norm per output unit: reduce all but the last axis.

    Flax kernels store the output features last (``(fan_in, fan_out)`` for
    ``Dense``, ``(*window, in_features, out_features)`` for ``Conv``), so this
    treats each output unit (neuron, filter) as a layer of its own.

    Args:
      leaf: an array (only its ``ndim`` is used).

    Returns:
      The tuple ``(0, ..., ndim - 2)``; ``()`` for scalars and vectors, so
      each entry of a vector is its own slice.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> layca_optax.fan_in_axes(jnp.zeros((3, 3, 8, 16)))
      (0, 1, 2)
      >>> tx = layca_optax.layca(0.1, axis=layca_optax.fan_in_axes)

    References:
      Liu et al., `Learning by turning: neural architecture aware
      optimisation <https://arxiv.org/abs/2102.07227>`_, 2021 (per-neuron
      norms, as ``axis=fan_in_axes`` gives); Carbonnelle & De
      Vleeschouwer, `Layer rotation: a surprisingly powerful indicator of
      generalization in deep networks? <https://arxiv.org/abs/1806.01603>`_,
      2019 (per-layer norms, the default).
    """
    return tuple(range(max(np.ndim(leaf) - 1, 0)))


def resolve_axes(x: jax.Array, axis: Axis, caller: str) -> tuple[int, ...]:
    """Returns the non-negative axes of ``x`` that ``axis`` reduces over."""
    if callable(axis):
        axis = axis(x)
    ndim = np.ndim(x)  # also for jax.ShapeDtypeStruct, on any jax version
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`{caller}(axis=...)` got axis {a} for a leaf of shape "
                f"{np.shape(x)}; it must lie in [-{ndim}, {ndim})."
            )
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def check_axis(axis: Axis, caller: str) -> None:
    """Raises ``ValueError`` unless ``axis`` is a valid :data:`Axis`."""
    if axis is None or callable(axis):
        return
    items = (axis,) if isinstance(axis, int) else axis
    try:
        ok = all(isinstance(a, int) and not isinstance(a, bool) for a in items)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"`{caller}(axis=...)` must be None, an int, a tuple of ints or a "
            f"callable, got {axis!r}."
        )


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
) -> None:
    """Raises ``ValueError`` naming ``caller(name=...)`` for a bad number.

    Traced values (inside ``optax.inject_hyperparams``' update) are skipped;
    they were checked when the optimizer was built.
    """
    if not is_concrete(value):
        return
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
        raise ValueError(
            f"`{caller}({name}=...)` must be finite and in {bounds}, "
            f"got {value!r}."
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
