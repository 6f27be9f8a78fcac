"""The reproduction's optimizers: :class:`Optimizer` objects, hashable
``build`` callables for :func:`~layca_optax.experiments.train_sweep`, whose
hyperparameters (learning rate, alpha, weight decay) are arguments of the
compiled run, so a whole grid compiles once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import optax

import layca_optax


ADAPTIVE = {
    "adam": optax.scale_by_adam,
    "rmsprop": optax.scale_by_rms,
    "adagrad": optax.scale_by_rss,
}
"""The adaptive methods of Fig. 6 (optax defaults), by name."""

KINDS = ("layca", "sgd", "sgd-wd", *ADAPTIVE, *(f"{a}-layca" for a in ADAPTIVE))
"""Every optimizer kind :class:`Optimizer` builds."""


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A family of optimizers, built from per-run hyperparameters.

    Every kind takes ``hp["learning_rate"]`` (the initial rate, times the
    step decay); ``"layca"`` also ``hp["alpha"]`` (Eq. 1's depth
    exponent, layers ordered by ``layer_order``), ``"sgd-wd"``
    ``hp["weight_decay"]`` (``optax.add_decayed_weights(wd)`` on the
    kernels before SGD: ``wd * w`` added to the gradient, which is Keras'
    ``l2(wd / 2)``).
    ``"<adaptive>-layca"`` is Layca over that method's direction
    (``layca(base=optax.scale_by_adam())``...).

    Attributes:
      kind: one of :data:`KINDS`.
      layer_order: the model's kernels in forward order (for alpha).
    """

    kind: str
    layer_order: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"Optimizer: unknown kind {self.kind!r}; known: {KINDS}"
            )

    def __call__(
        self, hp: Mapping[str, jax.Array], decay: optax.Schedule
    ) -> optax.GradientTransformation:
        lr = hp["learning_rate"]
        schedule = lambda step: lr * decay(step)
        kind = self.kind
        if kind == "layca":
            return layca_optax.layca(
                schedule, alpha=hp["alpha"], layer_order=self.layer_order
            )
        if kind == "sgd":
            return optax.sgd(schedule)
        if kind == "sgd-wd":
            decayed = optax.add_decayed_weights(
                hp["weight_decay"], layca_optax.default_layer_mask
            )
            return optax.chain(decayed, optax.sgd(schedule))
        if kind in ADAPTIVE:
            return optax.chain(
                ADAPTIVE[kind](), optax.scale_by_learning_rate(schedule)
            )
        base = ADAPTIVE[kind.removesuffix("-layca")]()
        return layca_optax.layca(schedule, base=base)
