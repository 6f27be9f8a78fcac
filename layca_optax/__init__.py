"""layca_optax: Layca and layer-rotation monitoring for JAX and Optax.

Layca (LAYer-level Controlled Amount of weight rotation; Carbonnelle & De
Vleeschouwer, arXiv:1806.01603) as composable optax transformations, and pure,
jit-able layer-rotation metrics.
"""

from layca_optax._alias import layca
from layca_optax._masks import (
    KeyPathLike,
    default_layer_mask,
    path_str,
)
from layca_optax._metrics import (
    layer_rotation,
    rotation_metrics,
    rotation_rate,
)
from layca_optax._multipliers import (
    Multipliers,
    depth_multipliers,
    scale_by_layer_multipliers,
)
from layca_optax._normalization import normalize_to_param_norm
from layca_optax._numerics import Axis, fan_in_axes
from layca_optax._projection import project_to_tangent
from layca_optax._reprojection import reproject_to_sphere


__version__ = "0.1.0"

__all__ = (
    "Axis",
    "KeyPathLike",
    "Multipliers",
    "default_layer_mask",
    "depth_multipliers",
    "fan_in_axes",
    "layca",
    "layer_rotation",
    "normalize_to_param_norm",
    "path_str",
    "project_to_tangent",
    "reproject_to_sphere",
    "rotation_metrics",
    "rotation_rate",
    "scale_by_layer_multipliers",
)
