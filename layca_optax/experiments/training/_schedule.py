"""The training schedule: the batch size, the paper's step decay, the
minibatches per epoch."""

from __future__ import annotations

import optax


BATCH_SIZE = 128
"""The minibatch size of the CNN experiments (the paper's)."""

DECAY_FACTOR = 0.2
"""The step decay's factor at each boundary."""

DECAY_AT = (0.8, 0.9)
"""The step decay's boundaries, as fractions of the run."""


def steps_per_epoch(n_train: int, batch_size: int = BATCH_SIZE) -> int:
    """Minibatches per epoch; the last incomplete one is dropped."""
    return n_train // batch_size


def step_decay(
    learning_rate: float,
    total_steps: int,
    *,
    factor: float = DECAY_FACTOR,
    at: tuple[float, ...] = DECAY_AT,
) -> optax.Schedule:
    """The paper's step decay: ``learning_rate`` times ``factor`` at each
    fraction ``at`` of ``total_steps``.

    Args:
      learning_rate: the initial learning rate.
      total_steps: the number of optimizer steps of the whole run.
      factor: the multiplicative decay at each boundary.
      at: the boundaries, as fractions of ``total_steps``.

    Returns:
      An ``optax.piecewise_constant_schedule``.

    Example:
      >>> schedule = step_decay(1.0, 100)
      >>> [round(float(schedule(s)), 6) for s in (0, 79, 80, 90)]
      [1.0, 1.0, 0.2, 0.04]
    """
    boundaries: dict[int, float] = {}
    for fraction in at:  # short runs may round two boundaries to one step
        step = max(1, round(fraction * total_steps))
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, boundaries)
