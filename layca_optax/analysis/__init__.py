"""The seed papers' analyses: equilibrium rates, AdaptCopy, Adam, re-init.

``from layca_optax import analysis``: the rotational-equilibrium formulas
(Kosson et al.), AdaptCopy's recordings (Section 5.4 of the Layca paper),
Adam's second-moment diagnostics, and re-initialization robustness ("Are
All Layers Created Equal?"). These names live only here, not at the top
level: paper replication, not the optimizer's API.

Example:
  >>> from layca_optax import analysis
  >>> rho = analysis.equilibrium_layca_learning_rate(
  ...     "sgdm", learning_rate=0.1, weight_decay=5e-4, momentum=0.9)
  >>> round(rho, 6)
  0.007255
"""

from layca_optax.analysis._adam import adam_nu_percentiles
from layca_optax.analysis._adaptcopy import (
    ScaleByRecordedRatesState,
    adapt_copy,
    scale_by_recorded_rates,
)
from layca_optax.analysis._equilibrium import (
    equilibrium_layca_learning_rate,
    equilibrium_rotation,
    equilibrium_weight_decay,
)
from layca_optax.analysis._recording import (
    RotationRecording,
    rotation_rate_row,
)
from layca_optax.analysis._reinit import (
    InitFn,
    reinit_robustness,
    rerandom_draws,
)
from layca_optax.analysis._reinit_result import (
    ReinitResult,
    plot_reinit_robustness,
)


__all__ = (
    "InitFn",
    "ReinitResult",
    "RotationRecording",
    "ScaleByRecordedRatesState",
    "adam_nu_percentiles",
    "adapt_copy",
    "equilibrium_layca_learning_rate",
    "equilibrium_rotation",
    "equilibrium_weight_decay",
    "plot_reinit_robustness",
    "reinit_robustness",
    "rerandom_draws",
    "rotation_rate_row",
    "scale_by_recorded_rates",
)
