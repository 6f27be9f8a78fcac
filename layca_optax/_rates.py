"""Layca's rate of each layer at each step: the rate the fused step reads.

A rate is a number, an optax schedule of the step count, or a
:class:`LayerRates`: a callable of the step count and the layers giving
each layer its own rate (AdaptCopy's recorded rates). :func:`layer_rates`
turns the first two into the third, so that :func:`scale_by_layca` reads
one kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax


def _no_check(layers: Any) -> None:
    del layers


@dataclasses.dataclass(frozen=True)
class LayerRates:
    """Each layer's rate at a step.

    Attributes:
      rates: ``rates(count, layers)``, the rate of each leaf of ``layers``
        at the step ``count`` (a traced int32), as a list in leaf order:
        numbers or scalar arrays. The same object for several leaves is
        turned into Layca's per-rate constants once.
      check: ``check(layers)`` raises ``ValueError`` at ``init`` for layers
        that ``rates`` cannot rate (a recording without their column).
    """

    rates: Callable[[jax.Array, Any], list[Any]]
    check: Callable[[Any], None] = _no_check


def layer_rates(
    learning_rate: optax.ScalarOrSchedule | LayerRates,
) -> LayerRates:
    """``learning_rate`` as a :class:`LayerRates`: a number or a schedule
    gives every layer the same rate (a schedule is called once per step,
    with the step count)."""
    if isinstance(learning_rate, LayerRates):
        return learning_rate

    def rates(count: jax.Array, layers: Any) -> list[Any]:
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        return [lr] * len(jax.tree.leaves(layers))

    return LayerRates(rates)
