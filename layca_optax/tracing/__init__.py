"""The model read from its jaxpr: layer order, stacked and fan-in axes.

Each function here traces ``fn(params, *args)`` to a jaxpr on abstract
values (nothing is computed) and walks it in program order
(:mod:`._jaxpr_walk`, :mod:`._layout_walk`). Every name here is also
importable from ``layca_optax``.
"""

from layca_optax.tracing._forward_order import forward_order
from layca_optax.tracing._layouts import (
    infer_fan_in_axes,
    infer_muon_dimension_numbers,
    infer_stacked_axes,
)


__all__ = (
    "forward_order",
    "infer_fan_in_axes",
    "infer_muon_dimension_numbers",
    "infer_stacked_axes",
)
