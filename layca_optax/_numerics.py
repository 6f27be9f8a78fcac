"""Per-layer reductions and NaN-free division (the checks: ``_checks``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# The axis rules live in _axes; these names are used as nx.* across modules.
from layca_optax._axes import (  # noqa: F401
    Axis,
    axes_per_leaf,
    axis_rules,
    check_axis,
    fan_in_axes,
    resolve_axes,
)
from layca_optax._checks import is_concrete  # noqa: F401
from layca_optax._masks import path_str  # noqa: F401


def reduction_dtype(dtype: Any) -> jnp.dtype:
    """At least float32: bf16/f16 leaves are reduced in float32."""
    return jnp.promote_types(dtype, jnp.float32)


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of ``dtype``."""
    return float(jnp.finfo(dtype).eps)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, and 0 where ``den == 0``; finite gradients everywhere."""
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)
