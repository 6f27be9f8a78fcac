"""Layer-rotation monitoring: cosine distance to init and per-step rates."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _numerics as nx, _sums as sm
from layca_optax._masks import path_str, resolve_mask
from layca_optax._numerics import Axis


# Inputs (old, new - old, new): <old, old>, <d, d>, <new, new>.
_COSINE_PAIRS = ((0, 0), (1, 1), (2, 2))


def metric_sums(
    new: jax.Array, old: jax.Array, axes: tuple[int, ...], tan: bool = False
) -> tuple[jax.Array, ...]:
    """Per layer: ``<old, old>``, (with ``tan``: ``<d, old>``,) ``<d, d>``
    and ``<new, new>``, with ``d = new - old``, in at least float32;
    scalars when a layer is the whole leaf (see :func:`_sums.layer_sums`)."""
    dtype = nx.reduction_dtype(jnp.result_type(new, old))
    a, b = jnp.asarray(new).astype(dtype), jnp.asarray(old).astype(dtype)
    pairs = ((0, 0), (1, 0), (1, 1), (2, 2)) if tan else _COSINE_PAIRS
    return sm.layer_sums((b, a - b, a), pairs, axes)


def cosine_from_sums(bb, dd, aa):
    """1 - cos of the angle between ``old`` and ``new`` from the sums of
    :func:`metric_sums`; NaN for non-finite sums."""
    na, nb = jnp.sqrt(aa), jnp.sqrt(bb)
    # 1 - cos = (||w - w0||^2 - (||w|| - ||w0||)^2) / (2 ||w|| ||w0||): exact
    # and free of the cancellation in 1 - <w, w0> / (||w|| ||w0||).
    gap = na - nb
    den = (na * nb) * 2
    both = den > 0
    dist = (dd - gap * gap) / sm.where(both, den, 1)
    # Degenerate: 0 when both are zero, 1 when only one is.
    total = aa + bb
    one = (total > 0).astype(dist.dtype)
    lo, hi = (np.asarray(x, dist.dtype) for x in (0, 2))
    out = jax.lax.clamp(lo, sm.where(both, dist, one), hi)
    return out + (total + dd) * 0  # NaN for a non-finite sum


def tan_from_sums(bb, db, dd, aa):
    """tan of the angle from ``old`` to ``new = old + d``, from one-pass sums.

    Takes ``||old||^2, <d, old>, ||d||^2, ||new||^2``; 0 when either is 0,
    ``inf`` at 90 degrees, NaN for non-finite sums.
    """
    return tan_from_parts(*tangent_parts(bb, db, dd), bb, dd, aa)


def tangent_parts(bb, db, dd) -> tuple[Any, Any, Any]:
    """``||old||``, ``k = <d, old> / ||old||^2`` (0 for a zero ``old``) and
    the norm of the part of ``d`` across ``old``."""
    k = sm.ratio(db, bb)
    return jnp.sqrt(bb), k, jnp.sqrt(jnp.maximum(dd - k * db, 0))


def tan_from_parts(nb, k, across, bb, dd, aa):
    """:func:`tan_from_sums` from :func:`tangent_parts`' values."""
    # With d = new - old, `new` has ||old|| (1 + k) along `old`, and across
    # it the part of d across `old`.
    along = nb * (1 + k)
    tan = sm.where(along == 0, jnp.inf, sm.ratio(across, along))
    out = sm.where((bb > 0) & (aa > 0), tan, 0.0)
    return out + sm.nan_if_nonfinite(bb, dd, aa)


def _cosine_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    return cosine_from_sums(*metric_sums(new, old, axes))


def _tan_leaf(axes: tuple[int, ...], new, old) -> jax.Array:
    return tan_from_sums(*metric_sums(new, old, axes, tan=True))


def _per_layer(leaf_fn):
    """``leaf_fn`` for lists of new and old layers, one cached trace per
    shape (see :func:`layca_optax._sums.per_leaf`)."""

    def fn(news, olds, axis, caller):
        return [
            sm.per_leaf(leaf_fn, nx.resolve_axes(b, axis, caller), a, b)
            for a, b in zip(news, olds, strict=True)
        ]

    return fn


def cosine_distances(news, olds, axis: Axis, caller: str) -> list:
    """:func:`layer_rotation`'s value for each pair of layers."""
    return _per_layer(_cosine_leaf)(news, olds, axis, caller)


def _map_layers(fn, new, old, mask, axis, caller):
    flags = resolve_mask(mask, new, caller)
    pairs: list = []

    def collect(f, a, b):
        if f:
            pairs.append((a, b))

    try:
        jax.tree.map(collect, flags, new, old)
    except ValueError as err:
        raise ValueError(
            f"`{caller}`: the two parameter trees differ in structure: {err}"
        ) from None
    values = iter(
        fn([a for a, _ in pairs], [b for _, b in pairs], axis, caller)
    )
    return jax.tree.map(
        lambda f, *_: next(values) if f else None, flags, new, old
    )


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

    Accuracy: exact in exact arithmetic; with float32 reductions the absolute
    error is about ``1e-7 * ||w - w0||^2 / (||w|| ||w0||)``, far below what a
    rotation curve shows.

    Args:
      params: the current parameters.
      init_params: the parameters at initialization (same structure).
      mask: which leaves are layers (``optax.MaskOrFn``, Python bools);
        default :func:`default_layer_mask` (``ndim >= 2``).
      axis: axes each norm reduces over (see :data:`Axis`); ``None`` gives a
        scalar per layer.

    Returns:
      A pytree like ``params`` with a float32 scalar (or, with ``axis``, an
      array) per layer and ``None`` at leaves that are not layers.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> w0 = {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)}
      >>> w1 = {"kernel": jnp.array([[0.0, 2.0]]), "bias": jnp.ones(2)}
      >>> layca_optax.layer_rotation(w1, w0)
      {'bias': None, 'kernel': Array(1., dtype=float32)}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Section 3.
    """
    return _map_layers(
        cosine_distances,
        params,
        init_params,
        mask,
        axis,
        "layer_rotation",
    )


def rotation_metrics(
    params: optax.Params,
    init_params: optax.Params,
    *,
    mask: optax.MaskOrFn = None,
    prefix: str = "rotation/",
) -> dict[str, jax.Array]:
    """Each layer's cosine distance to its initial weights, as a flat dict.

    The values of :func:`layer_rotation`, keyed by ``prefix`` plus the
    layer's path with ``/`` separators (``"rotation/Conv_0/kernel"``), ready
    for ``clu`` metric writers, TensorBoard or W&B. Pure and jit-able.

    Args:
      params: the current parameters.
      init_params: the parameters at initialization (same structure).
      mask: which leaves are layers; default ``ndim >= 2``.
      prefix: prepended to every key.

    Returns:
      A ``dict[str, jax.Array]`` of float32 scalars, in leaf order.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import layca_optax
      >>> w0 = {"Dense_0": {"kernel": jnp.eye(2)}}
      >>> w1 = {"Dense_0": {"kernel": jnp.array([[1.0, 1.0], [-1.0, 1.0]])}}
      >>> jax.jit(layca_optax.rotation_metrics)(w1, w0)
      {'rotation/Dense_0/kernel': Array(0.29289323, dtype=float32)}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (the
      layer rotation curves: cosine distance of each layer to its
      initialization).
    """
    tree = layer_rotation(params, init_params, mask=mask)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + path_str(p): v for p, v in flat}


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

    Accuracy: with float32 reductions the relative error is about
    ``1e-7 * (1 + (r / t)^2)``, with ``r`` and ``t`` the radial and tangential
    parts of ``new - old``: tiny for Layca (``r / t = tan(theta) / 2``) and for
    the usual optimizers; only a large norm change with a tiny turn loses
    digits (a 1% norm change with a 1e-4 turn: about 1e-3 relative).

    Args:
      new_params: parameters after the step(s).
      old_params: parameters before (same structure).
      mask: which leaves are layers; default ``ndim >= 2``.
      axis: axes each norm reduces over (see :data:`Axis`).

    Returns:
      A pytree like ``new_params`` with a float32 value per layer and ``None``
      at leaves that are not layers.

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
    return _map_layers(
        _per_layer(_tan_leaf),
        new_params,
        old_params,
        mask,
        axis,
        "rotation_rate",
    )
