"""The demo's model: a small 1-D CNN in the style of the paper's models."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from layca_optax.experiments.models._layers import (
    batch_norm,
    conv1d_as_matmul,
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
            x = batch_norm(train, self.bn_momentum, epsilon=1e-5)(x)
        x = x.mean(axis=-2)
        return nn.Dense(self.num_classes, use_bias=False, kernel_init=init)(x)
