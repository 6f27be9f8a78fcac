"""One way to build a full optimizer from its per-layer steps.

Every full optimizer of this package (:func:`~layca_optax.layca`,
:func:`~layca_optax.layca_lars`, :func:`~layca_optax.hyperball`,
:func:`~layca_optax.analysis.adapt_copy`) is the same wrapper around its
own steps: its public factory checks each argument once
(:func:`check_arguments` for the arguments they share, then its own),
builds its steps without checking
them again (the stateless primitives through :func:`stateless_step`, public
transformations such as :func:`~layca_optax.scale_by_layca` under
:func:`~layca_optax._checks.checked`) and hands them to
:func:`full_optimizer`, which adds what they all share: the checked
``base`` direction first, the zero-layer warning, and the layer/other split
with its warnings and update checks. ``tests/core/test_builder.py`` counts the
checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import optax

from layca_optax import (
    _axes as ax,
    _staging as stg,
    _static_args as static_args,
)
from layca_optax._axes import Axis
from layca_optax._direction import checked_base
from layca_optax._partition import (
    check_partition_args,
    partition_layers,
    warn_zero_layers,
)


def check_arguments(
    base: optax.GradientTransformation | None,
    other: optax.GradientTransformation | None,
    mask: optax.MaskOrFn,
    axis: Axis,
    static: Sequence[str],
) -> None:
    """``ValueError``, naming the function the user called, for a bad
    ``base``, ``other``, ``mask`` or ``axis``, or for one of the arguments
    ``static`` passed as a schedule by ``optax.inject_hyperparams``."""
    static_args.check_not_scheduled(static)
    ax.check_axis(axis)
    check_partition_args(base, other, mask)


def stateless_step(
    module: ModuleType, axis: Axis, *shared: object
) -> optax.GradientTransformation:
    """The stateless per-layer primitive of ``module``
    (:func:`~layca_optax.project_to_tangent`,
    :func:`~layca_optax.normalize_to_param_norm`,
    :func:`~layca_optax.reproject_to_sphere`) without the checks of its
    arguments, which the calling factory has made: the same per-layer map
    of the module's ``_leaf``, with ``shared`` (e.g. ``eps``) for every
    layer."""
    leaf_fn = module._leaf
    return stg.stateless_map_layers(leaf_fn, axis, shared=tuple(shared))


def full_optimizer(
    *steps: optax.GradientTransformation,
    base: optax.GradientTransformation | None,
    other: optax.GradientTransformation | None,
    mask: optax.MaskOrFn,
    axis: Axis,
) -> optax.GradientTransformationExtraArgs:
    """``steps`` after the ``base`` direction on the layers of ``mask``,
    ``other`` (default: no update) on the other leaves.

    ``base`` (None: the gradient) is probed at ``init`` (a full optimizer
    raises, a float16 direction that overflows warns; see
    :func:`~layca_optax._direction.checked_base`); ``init`` warns about
    zero layers (which no step of this package turns) and, when ``other``
    is None, about the leaves that stay frozen; ``update`` checks its
    arguments. The arguments are checked by the caller.
    """
    direction = optax.identity() if base is None else checked_base(base)
    layer_tx = warn_zero_layers(optax.chain(direction, *steps), axis)
    return partition_layers(layer_tx, other, mask)
