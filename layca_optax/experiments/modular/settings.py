"""Modular arithmetic with a transformer ("grokking"), offline.

A small transformer (:class:`~layca_optax.experiments.models.Transformer`)
learns ``a + b mod p`` from part of the table
(:func:`~layca_optax.experiments.data.modular_addition`) and is tested on
the rest. Four optimizer families get the same step budget and schedule:
AdamW with its weight decay (and learning rate) tuned, and three that
control the layers' rotation without weight decay: Adam + Layca, SGD +
Layca and Hyperball (AdamH). Each is tuned on a validation part of the
training fraction, never on the test set; the best configuration of each
is compared with AdamW over seeds (final test accuracy, steps to 99% test
accuracy, Welch's t) and its layer-rotation curves are drawn.

Run it with ``layca-optax modular`` or
:func:`~layca_optax.experiments.modular.run.run_modular`. This module holds
the settings and is imported without JAX (the command line reads them for
``--help``); the study's ``train``, ``stats``, ``figures``, ``report`` and
``run`` modules import it.
"""

from __future__ import annotations

import dataclasses

from layca_optax.experiments.common.format import power_of_3


FAMILIES = ("adamw", "adam-layca", "sgd-layca", "hyperball")
"""The compared optimizer families, in the report's order."""

RESULTS_NAME = "modular.json"
REPORT_NAME = "modular.md"
FIGURE_NAMES = {
    "accuracy": "modular_accuracy.png",
    "rotation": "modular_rotation.png",
}
"""Each figure's file name, by the key of
:func:`~layca_optax.experiments.modular.figures.figures`."""

MAX_STEPS = 100_000
"""The most steps ``--steps`` accepts."""


@dataclasses.dataclass(frozen=True)
class Unit:
    """One optimizer configuration, trained with every seed (picklable).

    Attributes:
      family: one of :data:`FAMILIES`.
      hparams: ``(name, value)`` pairs: ``learning_rate``, and
        ``weight_decay`` for ``"adamw"``.
    """

    family: str
    hparams: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        """``"adamw, lr=0.003, wd=1"``."""
        short = {"learning_rate": "lr", "weight_decay": "wd"}
        parts = [
            f"{short.get(k, k)}={power_of_3(v, below_one=True)}"
            for k, v in self.hparams
        ]
        return ", ".join([self.family, *parts])


@dataclasses.dataclass(frozen=True)
class ModularSettings:
    """What the modular-arithmetic study trains (hashable, picklable).

    Attributes:
      p: the modulus; the table has ``p * p`` pairs.
      train_fraction: the share of the table trained on plus validation.
      validation_fraction: the share of that held out for tuning.
      data_seed: the seed of the split (the same for every run).
      width: the transformer's width.
      heads: its attention heads.
      mlp: its MLP's hidden width.
      depth: its blocks.
      steps: full-batch steps of every run.
      eval_every: steps between two evaluations (it divides ``steps``).
      seeds: the initialization seeds; every configuration runs each.
      adamw_learning_rates: AdamW's learning rates (grid).
      weight_decays: AdamW's weight decays (grid, times each rate).
      adam_layca_learning_rates: Adam + Layca's rates (grid).
      sgd_layca_learning_rates: SGD + Layca's rates (grid).
      hyperball_learning_rates: Hyperball (AdamH)'s rates (grid).
      quick: a smoke test's reduced settings.
    """

    p: int = 47
    train_fraction: float = 0.5
    validation_fraction: float = 0.2
    data_seed: int = 0
    width: int = 64
    heads: int = 4
    mlp: int = 256
    depth: int = 1
    steps: int = 2000
    eval_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    adamw_learning_rates: tuple[float, ...] = (1e-2, 3e-2)
    weight_decays: tuple[float, ...] = (0.3, 1.0, 3.0)
    adam_layca_learning_rates: tuple[float, ...] = (3**-5, 3**-4, 3**-3)
    sgd_layca_learning_rates: tuple[float, ...] = (3**-4, 3**-3, 3**-2)
    hyperball_learning_rates: tuple[float, ...] = (3**-5, 3**-4, 3**-3)
    quick: bool = False


DEFAULT = ModularSettings()
"""The default study: 15 configurations x 3 seeds x 2,000 steps."""

QUICK = ModularSettings(
    p=13,
    width=16,
    mlp=32,
    steps=60,
    eval_every=20,
    seeds=(0, 1),
    adamw_learning_rates=(1e-2,),
    weight_decays=(0.3, 1.0),
    adam_layca_learning_rates=(3**-4,),
    sgd_layca_learning_rates=(3**-3,),
    hyperball_learning_rates=(3**-4,),
    quick=True,
)
"""``layca-optax modular --quick``: a smoke test (nothing groks)."""


def make_settings(
    *,
    quick: bool = False,
    seeds: int | None = None,
    first_seed: int = 0,
    steps: int | None = None,
) -> ModularSettings:
    """:data:`DEFAULT` (or :data:`QUICK`) with the command line's changes.

    Args:
      quick: start from :data:`QUICK`.
      seeds: how many seeds (None: as many as the base settings).
      first_seed: the seeds are ``first_seed .. first_seed + seeds - 1``.
      steps: the steps of every run (None: the base settings').

    Raises:
      ValueError: ``seeds`` below 1, ``first_seed`` negative, or ``steps``
        not a positive multiple of the evaluation interval up to
        :data:`MAX_STEPS`.

    Example:
      >>> make_settings(seeds=2, first_seed=5, steps=500).seeds
      (5, 6)
    """
    base = QUICK if quick else DEFAULT
    count = len(base.seeds) if seeds is None else seeds
    if count < 1 or first_seed < 0:
        raise ValueError(
            f"make_settings: {count} seeds from {first_seed}: need at least "
            "one seed, from 0"
        )
    steps = base.steps if steps is None else steps
    if not (0 < steps <= MAX_STEPS and steps % base.eval_every == 0):
        raise ValueError(
            f"make_settings: steps must be a multiple of {base.eval_every} "
            f"from {base.eval_every} to {MAX_STEPS}, got {steps}"
        )
    seeds_ = tuple(range(first_seed, first_seed + count))
    return dataclasses.replace(base, seeds=seeds_, steps=steps)


def units(settings: ModularSettings) -> list[Unit]:
    """Every configuration of the study, in :data:`FAMILIES` order: AdamW's
    learning rates x weight decays, then each other family's rates."""
    s = settings
    todo = [
        Unit("adamw", (("learning_rate", lr), ("weight_decay", wd)))
        for lr in s.adamw_learning_rates
        for wd in s.weight_decays
    ]
    rates = {
        "adam-layca": s.adam_layca_learning_rates,
        "sgd-layca": s.sgd_layca_learning_rates,
        "hyperball": s.hyperball_learning_rates,
    }
    for family in FAMILIES[1:]:
        todo += [Unit(family, (("learning_rate", lr),)) for lr in rates[family]]
    return todo
