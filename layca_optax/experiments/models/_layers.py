"""Layers the models share: BatchNorm as the paper's models use it, and the
1-D convolution as a matmul (fast inside loops on XLA:CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


KERAS_BN_EPSILON = 1e-3
"""Keras' BatchNorm epsilon, as in the authors' models."""


def batch_norm(
    train: bool,
    momentum: float,
    *,
    affine: bool = False,
    epsilon: float = KERAS_BN_EPSILON,
    name: str | None = None,
) -> nn.BatchNorm:
    """A BatchNorm layer: batch statistics (updating the running ones) when
    ``train``, else the running ones; without scale and offset unless
    ``affine``; named ``name`` (None: Flax's ``BatchNorm_<i>``)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        use_bias=affine,
        use_scale=affine,
        name=name,
    )


def conv1d_as_matmul(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated`` for 1-D NWC convolutions, as a matmul.

    XLA:CPU runs the kernel gradient of a convolution about 15 times slower
    inside a loop (the training ``lax.scan``) than outside; stacking the
    ``K`` shifted windows of the input (im2col) and contracting them with
    the kernel gives the same result with plain dot products, fast in
    loops. Cases other than an undilated, ungrouped 1-D convolution of a
    ``(batch, width, channels)`` input go to ``lax.conv_general_dilated``.

    Args:
      lhs: inputs of shape ``(batch, width, in_channels)``.
      rhs: kernel of shape ``(K, in_channels, out_channels)``.
      window_strides: the stride, a 1-tuple.
      padding: ``"SAME"``, ``"VALID"`` or one ``(low, high)`` pair.
      lhs_dilation: must be 1 (else the lax fallback).
      rhs_dilation: must be 1 (else the lax fallback).
      dimension_numbers: as Flax passes it for NWC inputs.
      feature_group_count: must be 1 (else the lax fallback).
      precision: passed to the contraction.
      **kwargs: passed to the fallback.

    Returns:
      The convolution, of shape ``(batch, out_width, out_channels)``.
    """
    undilated = all(
        d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))
    )
    if lhs.ndim != 3 or feature_group_count != 1 or not undilated:
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    (stride,), width, size = window_strides, lhs.shape[1], rhs.shape[0]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads((width,), (size,), (stride,), padding)
    ((low, high),) = padding
    padded = jnp.pad(lhs, ((0, 0), (low, high), (0, 0)))
    span = stride * ((width + low + high - size) // stride) + 1
    windows = [padded[:, j : j + span : stride] for j in range(size)]
    return jnp.einsum(
        "bwkc,kcf->bwf", jnp.stack(windows, axis=2), rhs, precision=precision
    )
