"""What ``layca-optax reproduce`` trains: :class:`Settings`, their defaults
and the smoke test's (imported without JAX: the command line reads them
for ``--help``)."""

from __future__ import annotations

import dataclasses
import math

from layca_optax.experiments.common.limits import MAX_SEED, MAX_SEEDS


TASKS = ("mnist1d", "cifar10", "cifar100")
"""The CNN experiments' tasks: MNIST-1D (generated) or the paper's own."""

DEFAULT_SCALE = 1.0
"""What ``--scale`` multiplies the epochs by unless given."""

MAX_SCALE = 10.0
"""The largest ``--scale``: 400 CNN and 1,000 MLP epochs."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the reproduction trains (hashable; sent to worker processes).

    Attributes:
      task: the CNN experiments' task, one of :data:`TASKS`.
      data_dir: where MNIST / CIFAR files are (None: ``$LAYCA_DATA_DIR``).
      seeds: the seeds; every configuration is trained with each.
      epochs: the CNN's epochs.
      mlp_epochs: the MLP's epochs.
      quick: the reduced grids of a smoke test.
      reinit_draws: re-randomized draws per layer in the reinit study.
    """

    task: str = TASKS[0]
    data_dir: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    mlp_epochs: int = 100
    quick: bool = False
    reinit_draws: int = 3


DEFAULT = Settings()
"""The full reproduction (the default scale: 177 runs)."""

QUICK = Settings(seeds=(0, 1), epochs=2, mlp_epochs=3, quick=True)
"""``reproduce --quick``: the smoke test's grids, seeds and epochs."""


def make_settings(
    *,
    quick: bool = False,
    task: str = DEFAULT.task,
    data_dir: str | None = None,
    seeds: int | None = None,
    first_seed: int = DEFAULT.seeds[0],
    scale: float = DEFAULT_SCALE,
) -> Settings:
    """:data:`DEFAULT` (or :data:`QUICK`) with the command line's changes.

    Args:
      quick: start from :data:`QUICK`.
      task: the CNN experiments' task.
      data_dir: the data folder, or None for ``$LAYCA_DATA_DIR``.
      seeds: how many seeds (None: as many as the base settings).
      first_seed: the seeds are ``first_seed .. first_seed + seeds - 1``.
      scale: multiplies both epoch counts (rounded, at least 1).

    Raises:
      ValueError: ``seeds`` is not in 1..:data:`MAX_SEEDS`, a seed is not
        in 0..:data:`MAX_SEED`, or ``scale`` is not a number in
        (0, :data:`MAX_SCALE`].

    Example:
      >>> make_settings(quick=True, first_seed=5, scale=2).seeds
      (5, 6)
      >>> make_settings(scale=2.5).epochs
      100
    """
    base = QUICK if quick else DEFAULT
    count = len(base.seeds) if seeds is None else seeds
    if not 1 <= count <= MAX_SEEDS:
        raise ValueError(
            f"make_settings: seeds must be from 1 to {MAX_SEEDS}, got {count}"
        )
    last = first_seed + count - 1
    if not (0 <= first_seed and last <= MAX_SEED):
        raise ValueError(
            f"make_settings: the seeds {first_seed}..{last} must lie in "
            f"0..{MAX_SEED}"
        )
    if not (math.isfinite(scale) and 0 < scale <= MAX_SCALE):
        raise ValueError(
            f"make_settings: scale must be in (0, {MAX_SCALE:g}], got {scale!r}"
        )
    return dataclasses.replace(
        base,
        task=task,
        data_dir=data_dir,
        seeds=tuple(range(first_seed, first_seed + count)),
        epochs=max(1, round(base.epochs * scale)),
        mlp_epochs=max(1, round(base.mlp_epochs * scale)),
    )
