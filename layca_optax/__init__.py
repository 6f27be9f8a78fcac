"""layca_optax: Layca and layer-rotation monitoring for JAX and Optax.

Layca (LAYer-level Controlled Amount of weight rotation; Carbonnelle & De
Vleeschouwer, arXiv:1806.01603) as composable optax transformations, and pure,
jit-able layer-rotation metrics.
"""

# First of all: in the layca-optax command only (library users are not
# affected), SIGINT and SIGTERM end the process with one line from here
# on, before JAX is imported; see layca_optax/_early_signals.py.
from layca_optax import _early_signals  # noqa: F401  # isort: skip

import ast
import importlib
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from layca_optax._alias import layca
    from layca_optax._axes import Axis, fan_in_axes, stacked_axes
    from layca_optax._direction import muon_dimension_numbers
    from layca_optax._layca import ScaleByLaycaState, scale_by_layca
    from layca_optax._masks import (
        KeyPathLike,
        default_layer_mask,
        path_str,
    )
    from layca_optax._multipliers import (
        Multipliers,
        depth_multipliers,
        scale_by_layer_multipliers,
    )
    from layca_optax._norm_growth import CapNormGrowthState, cap_norm_growth
    from layca_optax._normalization import normalize_to_param_norm
    from layca_optax._projection import project_to_tangent
    from layca_optax._radial_brake import radial_brake
    from layca_optax._radius import Radius, ReprojectToSphereState
    from layca_optax._reprojection import reproject_to_sphere
    from layca_optax._shard_map import psum_layer_sums, with_psum_layer_sums
    from layca_optax._tangent_adam import (
        TangentAdamState,
        scale_by_tangent_adam,
    )
    from layca_optax._tangent_trace import TangentTraceState, tangent_trace
    from layca_optax._variants import hyperball, layca_lars
    from layca_optax.monitor import (
        RotationHistory,
        TrackRotationState,
        forward_order,
        layer_rotation,
        plot_rotation_curves,
        plot_rotation_rates,
        rotation_metrics,
        rotation_rate,
        scalar_metrics,
        track_rotation,
        tracked_metrics,
    )
    from layca_optax.tracing import (
        infer_fan_in_axes,
        infer_muon_dimension_numbers,
        infer_stacked_axes,
    )


__version__ = "0.1.0"

__all__ = (
    "Axis",
    "CapNormGrowthState",
    "KeyPathLike",
    "Multipliers",
    "Radius",
    "ReprojectToSphereState",
    "RotationHistory",
    "ScaleByLaycaState",
    "TangentAdamState",
    "TangentTraceState",
    "TrackRotationState",
    "cap_norm_growth",
    "default_layer_mask",
    "depth_multipliers",
    "fan_in_axes",
    "forward_order",
    "hyperball",
    "infer_fan_in_axes",
    "infer_muon_dimension_numbers",
    "infer_stacked_axes",
    "layca",
    "layca_lars",
    "layer_rotation",
    "muon_dimension_numbers",
    "normalize_to_param_norm",
    "path_str",
    "plot_rotation_curves",
    "plot_rotation_rates",
    "project_to_tangent",
    "psum_layer_sums",
    "radial_brake",
    "reproject_to_sphere",
    "rotation_metrics",
    "rotation_rate",
    "scalar_metrics",
    "scale_by_layca",
    "scale_by_layer_multipliers",
    "scale_by_tangent_adam",
    "stacked_axes",
    "tangent_trace",
    "track_rotation",
    "tracked_metrics",
    "with_psum_layer_sums",
)


_HOME: dict[str, str] = {}
"""Each public name's module, read on first use from the imports under
``TYPE_CHECKING`` above (the one list of them, as lazy_loader's stubs)."""


def _home(name: str) -> str | None:
    """The module of the public ``name`` (None: not one)."""
    if not _HOME:
        with open(__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        (block,) = [
            node
            for node in tree.body
            if isinstance(node, ast.If)
            and ast.unparse(node.test) == "TYPE_CHECKING"
        ]
        for node in block.body:
            assert isinstance(node, ast.ImportFrom) and node.module
            _HOME.update(
                dict.fromkeys((a.name for a in node.names), node.module)
            )
    return _HOME.get(name)


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use (PEP 562), so that
    ``import layca_optax`` imports no JAX: the ``layca-optax`` command's
    ``--help`` and ``--version`` stay fast. A submodule (``monitor``,
    ``_checks``...) is imported on first use too."""
    home = None if name.startswith("__") else _home(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
