"""Layer-rotation monitoring: cosine distance to init and per-step rates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from layca_optax import (
    _axes as ax,
    _checks as checks,
    _staging as stg,
    _sums as sm,
)
from layca_optax._axes import Axis
from layca_optax._masks import path_str, resolve_mask, shape_mismatch
from layca_optax.monitor._formulas import cosine_leaf, tan_leaf
from layca_optax.monitor._keys import split_slices


_ROTATION_ARGS = ("params", "init_params")
_RATE_ARGS = ("new_params", "old_params")


def layer_axes(tree: Any, mask: optax.MaskOrFn, axis: Axis) -> list[Any]:
    """Each leaf's reduction axes for ``axis`` (a per-leaf rule sees the
    leaf's path), ``None`` at the leaves that ``mask`` says are not layers;
    ``[]`` for a tree without leaves (such as ``optax.tree.map_params``'
    placeholder), whose mask is not computed."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        return []
    flags = jax.tree.leaves(resolve_mask(mask, tree))
    sm.check_floating(tree, flags)
    rules = ax.axis_rules(tree, axis)
    return [
        ax.resolve_axes(x, rule, path) if flag else None
        for (path, x), rule, flag in zip(flat, rules, flags, strict=True)
    ]


def flatten_like(treedef: Any, tree: Any, what: str) -> list[Any]:
    """The subtrees of ``tree`` at the leaves of ``treedef``, or
    ``ValueError`` saying that ``what`` differ in structure."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"`{checks.caller()}`: {what} differ in structure: {err}"
        ) from None


def _map_layers(
    leaf_fn: Callable, new: Any, old: Any, mask, axis, names: tuple
) -> Any:
    """``leaf_fn(axes, new_leaf, old_leaf)`` for each layer, through
    :func:`_staging.map_leaves` (one cached trace per shape; on GPUs every
    layer's formula at once), as a tree like
    ``new`` with ``None`` at the leaves that are not layers. ``names`` are
    the arguments ``new`` and ``old`` of the function called."""
    ax.check_axis(axis)
    treedef: Any
    flat, treedef = jax.tree_util.tree_flatten_with_path(new)
    what = f"the two parameter trees (`{names[0]}` and `{names[1]}`)"
    olds = flatten_like(treedef, old, what)
    bad = shape_mismatch(flat, olds)
    if bad:
        path, shape, old_shape = bad
        raise ValueError(
            f"{checks.arg(names[1])}: the leaf {path!r} has "
            f"shape {old_shape} in `{names[1]}` but {shape} in "
            f"`{names[0]}`; each leaf must have the same shape in both."
        )
    axes = layer_axes(new, mask, axis)
    layers = [i for i, a in enumerate(axes) if a is not None]
    values = iter(
        stg.map_leaves(
            leaf_fn,
            [axes[i] for i in layers],
            [(flat[i][1], olds[i]) for i in layers],
        )
    )
    return treedef.unflatten(
        [None if a is None else next(values) for a in axes]
    )


@checks.public
def layer_rotation(
    params: optax.Params,
    init_params: optax.Params,
    *,
    mask: optax.MaskOrFn = None,
    axis: Axis = None,
) -> Any:
    r"""Each layer's cosine distance to its initial weights, as a pytree.

    .. math::

      1 - \cos\angle(w_t, w_0)
      = 1 - \frac{\langle w_t, w_0 \rangle}{\lVert w_t \rVert \lVert w_0 \rVert}

    (``scipy.spatial.distance.cosine`` on the flattened kernels): 0 at
    initialization, 1 when orthogonal, up to 2. Plotted per epoch, these are
    the paper's *layer rotation curves*. Computed in one pass, in at least
    float32, without the cancellation of the textbook formula.

    Degenerate layers: 0 when both are zero, 1 when only one is (a zero
    vector is orthogonal to everything).

    Accuracy, with float32 reductions: below 45 degrees the value comes
    from the tangent of the angle (the parts of ``w - w0`` across and along
    ``w0``), with a relative error within ``2e-6 * min(1 + (r / t)^2, 1 /
    sin^2)`` of the angle, ``r`` and ``t`` the radial and tangential parts
    of ``w - w0`` (a 1% norm change with a 1e-4 rad turn: about 1e-3), and
    about ``1e-6`` absolute (the rounding of the sums); from 45 degrees on,
    ``1 - <w, w0> / (||w|| ||w0||)``, a few ``1e-7`` absolute. A turn so
    small that the squares of ``w - w0``'s entries underflow
    (root-mean-square entry of ``w`` times the angle below about 1e-18)
    reads low, 0 at the limit. Norms up to 9e18 (``||w - w0||`` and both
    norms below 1.8e19); beyond, NaN. See ``docs/robustness.md``.

    Args:
      params: the current parameters.
      init_params: the parameters at initialization (same structure).
      mask: which leaves are layers (``optax.MaskOrFn``, Python bools);
        default :func:`default_layer_mask` (kernels).
      axis: axes each norm reduces over (see :data:`Axis`: one rule, a
        callable of the leaf or of its path and the leaf, or a prefix
        tree); ``None`` gives a scalar per layer. With axes left unreduced,
        each slice along them is a layer of its own: ``axis=(-2, -1)`` on a
        stacked ``(L, d_in, d_out)`` kernel gives one value per stacked
        layer.

    Returns:
      A pytree like ``params`` with ``None`` at leaves that are not layers
      and, at each layer, a float32 array of the shape of the axes that
      ``axis`` keeps (the reduced ones dropped, not kept as size 1): a
      scalar with ``axis=None``, ``(L,)`` for ``axis=(-2, -1)`` on an
      ``(L, d_in, d_out)`` kernel, ``(L, E)`` on ``(L, E, d_in, d_out)``
      experts.

    Raises:
      ValueError: trees of different structures, a leaf whose shape differs
        between ``params`` and ``init_params``, or a bad ``mask``/``axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> w0 = {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)}
      >>> w1 = {"kernel": jnp.array([[0.0, 2.0]]), "bias": jnp.ones(2)}
      >>> layca_optax.layer_rotation(w1, w0)
      {'bias': None, 'kernel': Array(1., dtype=float32)}

      One value per stacked layer of a scanned model's ``(L, d, d)`` kernel:

      >>> stack0 = jnp.stack([jnp.eye(2), jnp.eye(2)])
      >>> stack1 = jnp.stack([jnp.eye(2), jnp.eye(2)[::-1]])
      >>> layca_optax.layer_rotation(stack1, stack0, axis=(-2, -1)).round(4)
      Array([0., 1.], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 3.
    """
    return _map_layers(
        cosine_leaf, params, init_params, mask, axis, _ROTATION_ARGS
    )


@checks.public
def rotation_metrics(
    params: optax.Params,
    init_params: optax.Params,
    *,
    mask: optax.MaskOrFn = None,
    axis: Axis = None,
    prefix: str = "rotation/",
) -> dict[str, jax.Array]:
    """Each layer's cosine distance to its initial weights, as a flat dict.

    The values of :func:`layer_rotation`, keyed by ``prefix`` plus the
    layer's path with ``/`` separators (``"rotation/Conv_0/kernel"``), ready
    for ``clu`` metric writers, TensorBoard, W&B or :class:`RotationHistory`.
    Pure and jit-able (``axis``, ``mask`` and ``prefix`` static).

    With an ``axis`` that keeps some axes of a leaf (one norm per slice),
    each slice gets its own scalar, named with its indices along the kept
    axes: ``"rotation/h/mlp/kernel/3"`` for stacked layer 3 of an
    ``(L, d_in, d_out)`` kernel with ``axis=(-2, -1)``,
    ``"rotation/moe/experts/3/5"`` for layer 3, expert 5 of an
    ``(L, E, d_in, d_out)`` tensor. A leaf that is one layer keeps its name.
    (One key per slice: for thousands of slices, e.g. per neuron with
    ``axis=fan_in_axes``, log :func:`layer_rotation`'s arrays instead.)

    Args:
      params: the current parameters.
      init_params: the parameters at initialization (same structure and
        shapes).
      mask: which leaves are layers; default :func:`default_layer_mask`
        (kernels).
      axis: axes each norm reduces over (see :data:`Axis`); default the
        whole leaf.
      prefix: a str prepended to every key.

    Returns:
      A ``dict[str, jax.Array]`` of float32 scalars, in leaf order (slices
      of a leaf in C order).

    Raises:
      ValueError: as :func:`layer_rotation`, or a ``prefix`` that is not a
        str.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import layca_optax
      >>> w0 = {"Dense_0": {"kernel": jnp.eye(2)}}
      >>> w1 = {"Dense_0": {"kernel": jnp.array([[1.0, 1.0], [-1.0, 1.0]])}}
      >>> jax.jit(layca_optax.rotation_metrics)(w1, w0)
      {'rotation/Dense_0/kernel': Array(0.29289323, dtype=float32)}

      Per stacked layer of a scanned model:

      >>> h0 = {"h": {"kernel": jnp.stack([jnp.eye(2), jnp.eye(2)])}}
      >>> h1 = {"h": {"kernel": jnp.stack([jnp.eye(2), jnp.eye(2)[::-1]])}}
      >>> metrics = layca_optax.rotation_metrics(h1, h0, axis=(-2, -1))
      >>> {k: round(float(v), 4) for k, v in metrics.items()}
      {'rotation/h/kernel/0': 0.0, 'rotation/h/kernel/1': 1.0}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (the
      layer rotation curves: cosine distance of each layer to its
      initialization).
    """
    checks.check_prefix(prefix)
    tree = _map_layers(
        cosine_leaf, params, init_params, mask, axis, _ROTATION_ARGS
    )
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return split_slices((prefix + path_str(p), v) for p, v in flat)


@checks.public
def rotation_rate(
    new_params: optax.Params,
    old_params: optax.Params,
    *,
    mask: optax.MaskOrFn = None,
    axis: Axis = None,
) -> Any:
    r"""Tangent of the angle each layer turned between two parameter sets.

    For Layca, :math:`\tan\angle(w_t, w_{t+1}) = \eta_l` exactly, so this
    measures each layer's effective learning rate; for any other optimizer it
    is the rotation rate that AdaptCopy replays. Computed in one pass from
    :math:`d = w_{new} - w_{old}`, accurate for small angles.

    Degenerate layers: 0 when either is zero; ``inf`` for exactly 90
    degrees; negative beyond 90 degrees (the tangent's sign).

    Accuracy: with float32 reductions the relative error is within
    ``2e-6 * min(1 + (r / t)^2, 1 / sin^2)`` of the angle, with ``r`` and
    ``t`` the radial and tangential parts of ``new - old``: tiny for Layca
    (``r / t = tan(theta) / 2``) and for the usual optimizers; only a large
    norm change with a tiny turn loses digits (a 1% norm change with a
    1e-4 turn: about 1e-3 relative).

    Args:
      new_params: parameters after the step(s).
      old_params: parameters before (same structure).
      mask: which leaves are layers; default :func:`default_layer_mask`
        (kernels).
      axis: axes each norm reduces over (see :data:`Axis`).

    Returns:
      A pytree like ``new_params`` with ``None`` at leaves that are not
      layers and, at each layer, a float32 array of the shape of the axes
      that ``axis`` keeps, as :func:`layer_rotation` (a scalar with
      ``axis=None``, ``(L,)`` for ``axis=(-2, -1)`` on ``(L, d, d)``).

    Raises:
      ValueError: trees of different structures, a leaf whose shape differs
        between ``new_params`` and ``old_params``, or a bad ``mask``/``axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> old = jnp.array([[1.0, 0.0]])
      >>> new = jnp.array([[1.0, 0.5]])
      >>> layca_optax.rotation_rate(new, old)
      Array(0.5, dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (per-step
      rotation; Layca makes it arctan(lr) per layer).
    """
    return _map_layers(tan_leaf, new_params, old_params, mask, axis, _RATE_ARGS)
