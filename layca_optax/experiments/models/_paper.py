"""The paper's models in Flax Linen: C10-CNN1, the C100 ResNet-32, the MLP.

Ports of the authors' Keras builders (``models.py`` and the MNIST notebook
of ``ispgroupucl/layer-rotation-paper-experiments``), with the same layer
names, initializers and BatchNorm settings (Keras' momentum 0.99 and
epsilon 1e-3). Inputs are NHWC. Each model's ``layer_names`` lists its
kernels' paths in forward order (input side first), as
:func:`layca_optax.forward_order` finds them and as ``layca``'s
``layer_order`` takes them; pytree order differs (keys sort as strings).
BatchNorm running statistics live in the ``batch_stats`` collection;
call with ``train=True`` and ``mutable=["batch_stats"]`` to update them.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from layca_optax.experiments.models._layers import batch_norm


class C10CNN1(nn.Module):
    """The paper's C10-CNN1: a 25-layer VGG-style CNN for CIFAR-10.

    The authors' ``VGG`` builder with 4 stages of 6 convolutions (3x3,
    'same', 32/64/128/256 filters); each convolution is followed by ReLU,
    then BatchNorm without affine parameters (after the activation, as in
    the paper). 2x2 max pooling after stages 0-2, global average pooling,
    a Dense classifier (softmax in the loss). He-uniform kernels, no biases:
    every parameter is one of the 25 kernels. The paper trains it on
    CIFAR-10 standardized by the global pixel mean/std, without
    augmentation.

    Attributes:
      num_classes: outputs of the classifier.
      stages: convolutions per stage.
      filters: filters of each stage's convolutions.
      bn_momentum: BatchNorm's running-statistics momentum.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = C10CNN1()
      >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
      >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
      >>> len(model.layer_names), model.layer_names[0]
      (25, 'stage0_layer0_conv/kernel')
    """

    num_classes: int = 10
    stages: Sequence[int] = (6, 6, 6, 6)
    filters: Sequence[int] = (32, 64, 128, 256)
    bn_momentum: float = 0.99

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The kernels' paths in forward order (input side first)."""
        convs = tuple(
            f"stage{s}_layer{i}_conv/kernel"
            for s, n in enumerate(self.stages)
            for i in range(n)
        )
        return (*convs, "last_dense/kernel")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Logits of shape ``(batch, num_classes)`` for NHWC images.

        ``train`` normalizes with batch statistics and updates the running
        ones (True), or uses the running ones (False).
        """
        init = nn.initializers.he_uniform()
        last = len(self.stages) - 1
        for s, (n, f) in enumerate(zip(self.stages, self.filters, strict=True)):
            for i in range(n):
                x = nn.Conv(
                    f,
                    (3, 3),
                    padding="SAME",
                    use_bias=False,
                    kernel_init=init,
                    name=f"stage{s}_layer{i}_conv",
                )(x)
                x = nn.relu(x)
                name = f"stage{s}_layer{i}_batch"
                x = batch_norm(train, self.bn_momentum, name=name)(x)
            if s != last:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.mean(axis=(1, 2))
        return nn.Dense(
            self.num_classes,
            use_bias=False,
            kernel_init=init,
            name="last_dense",
        )(x)


class ResNet32(nn.Module):
    """The paper's C100-resnet: ResNet-32 v1 (the Keras CIFAR example).

    A conv-BN-ReLU stem with 16 filters, then 3 stages of ``(depth - 2) / 6``
    residual blocks (conv-BN-ReLU, conv-BN, add, ReLU) with 16/32/64
    filters; the first block of stages 1 and 2 has stride 2 and a strided
    1x1 projection shortcut without BatchNorm. 8x8 average pooling, a Dense
    classifier. He-normal kernels, no biases, BatchNorm without affine
    parameters: for depth 32, every parameter is one of the 34 kernels
    (31 convolutions in the main path, 2 shortcuts, the classifier).
    Layer names are the authors' (``first_conv``, ``{stage}_{block}_1_conv``,
    ``{stage}_{block}_2_conv``, ``{stage}_0_strided_conv``,
    ``last_dense``). Expects 32x32 inputs.

    Attributes:
      num_classes: outputs of the classifier (100 for CIFAR-100).
      depth: ``6n + 2`` layers (32; 20, 44, 56 and 110 also work).
      bn_momentum: BatchNorm's running-statistics momentum.
    """

    num_classes: int = 100
    depth: int = 32
    bn_momentum: float = 0.99

    @property
    def _blocks(self) -> int:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"ResNet32: depth must be 6n + 2 with n >= 1, got {self.depth}"
            )
        return (self.depth - 2) // 6

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The kernels' paths in forward order (input side first)."""
        names = ["first_conv/kernel"]
        for stage in range(3):
            for block in range(self._blocks):
                names += [f"{stage}_{block}_{i}_conv/kernel" for i in (1, 2)]
                if stage > 0 and block == 0:
                    names.append(f"{stage}_{block}_strided_conv/kernel")
        return (*names, "last_dense/kernel")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Logits of shape ``(batch, num_classes)`` for 32x32 NHWC images.

        ``train`` normalizes with batch statistics and updates the running
        ones (True), or uses the running ones (False).
        """
        init = nn.initializers.he_normal()

        def layer(x, filters, name, size=3, strides=1, bn=True, relu=True):
            x = nn.Conv(
                filters,
                (size, size),
                strides=(strides, strides),
                padding="SAME",
                use_bias=False,
                kernel_init=init,
                name=f"{name}_conv",
            )(x)
            if bn:
                norm = batch_norm(train, self.bn_momentum, name=f"{name}_batch")
                x = norm(x)
            return nn.relu(x) if relu else x

        x = layer(x, 16, "first")
        filters = 16
        for stage in range(3):
            for block in range(self._blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                name = f"{stage}_{block}"
                y = layer(x, filters, f"{name}_1", strides=strides)
                y = layer(y, filters, f"{name}_2", relu=False)
                if strides == 2:  # projection shortcut, after the block
                    x = layer(x, filters, f"{name}_strided", 1, 2, False, False)
                x = nn.relu(x + y)
            filters *= 2
        x = nn.avg_pool(x, (8, 8), strides=(8, 8))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(
            self.num_classes,
            use_bias=False,
            kernel_init=init,
            name="last_dense",
        )(x)


class MLP(nn.Module):
    """The paper's Section 6 MLP: Dense(784)-BN-ReLU-Dense(10).

    As the authors' MNIST notebook: Keras defaults, so both Dense layers
    have biases and Glorot-uniform kernels, and BatchNorm has its scale and
    offset. Inputs of any shape are flattened (784 pixels for MNIST, 64 for
    the 8x8 digits). ``layca``'s default mask turns only the two kernels;
    pass ``other=`` to train the biases and BatchNorm parameters.

    Attributes:
      hidden: units of the hidden layer.
      num_classes: outputs of the classifier.
      bn_momentum: BatchNorm's running-statistics momentum.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((3, 8, 8, 1))
      >>> variables = MLP().init(jax.random.key(0), x)
      >>> variables["params"]["dense0"]["kernel"].shape
      (64, 784)
      >>> MLP().apply(variables, x).shape
      (3, 10)
    """

    hidden: int = 784
    num_classes: int = 10
    bn_momentum: float = 0.99

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The kernels' paths in forward order (input side first)."""
        return ("dense0/kernel", "densef/kernel")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Logits of shape ``(batch, num_classes)``; inputs are flattened.

        ``train`` normalizes with batch statistics and updates the running
        ones (True), or uses the running ones (False).
        """
        init = nn.initializers.xavier_uniform()  # Keras' glorot_uniform
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.hidden, kernel_init=init, name="dense0")(x)
        x = batch_norm(train, self.bn_momentum, affine=True, name="batch")(x)
        x = nn.relu(x)
        return nn.Dense(self.num_classes, kernel_init=init, name="densef")(x)
