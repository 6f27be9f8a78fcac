"""A small 1-D CNN in the style of the Layca paper's models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


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


class CNN(nn.Module):
    """Conv-ReLU-BatchNorm blocks, global average pooling, a linear classifier.

    As in the paper's models (Carbonnelle & De Vleeschouwer, Section 6 of the
    project's spec): convolutions and the classifier have no bias, BatchNorm
    has no affine parameters and comes after the ReLU, kernels use He-uniform
    initialization. So every trainable parameter is a kernel, i.e. a layer
    for Layca's default mask; BatchNorm's running statistics live in the
    ``batch_stats`` collection.

    Attributes:
      features: output channels of each convolution.
      strides: stride of each convolution (same length as ``features``).
      kernel_size: width of every convolution kernel.
      num_classes: number of outputs of the classifier.
      bn_momentum: BatchNorm's running-statistics momentum.
    """

    features: Sequence[int] = (32, 32, 32, 32)
    strides: Sequence[int] = (1, 2, 2, 1)
    kernel_size: int = 5
    num_classes: int = 10
    bn_momentum: float = 0.9

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The kernels' paths in forward order (input side first)."""
        convs = tuple(f"Conv_{i}/kernel" for i in range(len(self.features)))
        return (*convs, "Dense_0/kernel")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Logits for a batch of sequences.

        Args:
          x: inputs of shape ``(batch, length, channels)``.
          train: normalize with batch statistics and update the running
            ones (True), or use the running ones (False).

        Returns:
          Logits of shape ``(batch, num_classes)``.
        """
        init = nn.initializers.he_uniform()
        blocks = zip(self.features, self.strides, strict=True)
        for features, stride in blocks:
            x = nn.Conv(
                features,
                (self.kernel_size,),
                strides=(stride,),
                padding="SAME",
                use_bias=False,
                kernel_init=init,
                conv_general_dilated=conv1d_as_matmul,
            )(x)
            x = nn.relu(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                use_bias=False,
                use_scale=False,
            )(x)
        x = x.mean(axis=-2)
        return nn.Dense(self.num_classes, use_bias=False, kernel_init=init)(x)
