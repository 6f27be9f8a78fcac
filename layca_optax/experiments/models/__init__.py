"""The experiments' models in Flax Linen: the demo's 1-D CNN and the paper's
C10-CNN1, ResNet-32 and MLP (each with ``layer_names``, its kernels in
forward order)."""

from layca_optax.experiments.models._cnn import CNN
from layca_optax.experiments.models._layers import batch_norm, conv1d_as_matmul
from layca_optax.experiments.models._lm import (
    LM_KERNELS as LM_KERNELS,
    CharLM as CharLM,
)
from layca_optax.experiments.models._paper import C10CNN1, MLP, ResNet32
from layca_optax.experiments.models._transformer import (
    Transformer as Transformer,
)


__all__ = (
    "CNN",
    "C10CNN1",
    "MLP",
    "ResNet32",
    "batch_norm",
    "conv1d_as_matmul",
)
