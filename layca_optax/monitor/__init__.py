"""Layer-rotation monitoring: metrics, in-step tracking, history, plots.

The public namespace of the monitoring tools, as ``optax.tree`` is for
tree utilities: ``from layca_optax import monitor`` then
``monitor.rotation_metrics(params, init_params)``. Every name here is also
importable from ``layca_optax``.

Example:
  >>> import jax.numpy as jnp
  >>> from layca_optax import monitor
  >>> w0 = {"Dense_0": {"kernel": jnp.eye(2)}}
  >>> w1 = {"Dense_0": {"kernel": jnp.array([[1.0, 1.0], [0.0, 1.0]])}}
  >>> metrics = monitor.rotation_metrics(w1, w0)  # 1 - 2 / sqrt(6)
  >>> round(float(metrics["rotation/Dense_0/kernel"]), 4)
  0.1835
"""

from layca_optax.monitor._history import RotationHistory
from layca_optax.monitor._metrics import (
    layer_rotation,
    rotation_metrics,
    rotation_rate,
)
from layca_optax.monitor._plots import plot_rotation_curves, plot_rotation_rates
from layca_optax.monitor._scalars import scalar_metrics
from layca_optax.monitor._tracking import (
    TrackRotationState,
    track_rotation,
    tracked_metrics,
)
from layca_optax.tracing import forward_order


__all__ = (
    "RotationHistory",
    "TrackRotationState",
    "forward_order",
    "layer_rotation",
    "plot_rotation_curves",
    "plot_rotation_rates",
    "rotation_metrics",
    "rotation_rate",
    "scalar_metrics",
    "track_rotation",
    "tracked_metrics",
)
