"""Per-layer learning-rate multipliers, and the paper's depth rule (Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks, _sums as sm
from layca_optax._axes import axes_per_leaf
from layca_optax._masks import KeyPathLike, path_str


Multipliers: TypeAlias = float | jax.Array | Any | Callable[[Any], Any]
"""Per-layer factors: a number, a pytree of numbers that is a prefix of the
params, or a callable that maps the params to such a pytree."""


MAX_LAYERS = 10**6
"""The most layers :func:`depth_multipliers` accepts (its list has one
entry per layer)."""


@checks.public
def depth_multipliers(
    alpha: jax.typing.ArrayLike, num_layers: int
) -> list[Any]:
    r"""The layerwise learning-rate multipliers of Eq. 1 of the Layca paper.

    Layer :math:`l = 0, \dots, L-1` in forward order (0 nearest the input):

    .. math::

      m_l =
      \begin{cases}
        (1 - \alpha)^{5 (L - 1 - l) / (L - 1)} & \alpha > 0, \\
        (1 + \alpha)^{5 l / (L - 1)} & \alpha \le 0.
      \end{cases}

    With :math:`\alpha > 0` later layers rotate faster (the last gets 1, the
    first :math:`(1-\alpha)^5`); with :math:`\alpha < 0` earlier layers do;
    :math:`\alpha = 0` gives 1 everywhere. A single layer gets 1.

    Args:
      alpha: in the open interval (-1, 1). May be a traced scalar (inside
        ``optax.inject_hyperparams``), in which case the entries are arrays.
      num_layers: the number of layers :math:`L`, at least 1 and at most
        :data:`MAX_LAYERS` (10**6; no model has more, and the list has one
        entry per layer).

    Returns:
      A list of ``num_layers`` multipliers, input side first.

    Example:
      >>> import layca_optax
      >>> [round(m, 4) for m in layca_optax.depth_multipliers(0.6, 3)]
      [0.0102, 0.1012, 1.0]

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019, Eq. 1.
    """
    checks.check_scalar(
        alpha,
        "alpha",
        low=-1.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    checks.check_count(num_layers, "num_layers")
    if num_layers > MAX_LAYERS:
        raise ValueError(
            f"{checks.arg('num_layers')} must be at most "
            f"{MAX_LAYERS} (one multiplier per layer), got {num_layers!r}."
        )
    if num_layers == 1:
        return [1.0]
    last = num_layers - 1
    if checks.is_concrete(alpha):
        x = float(alpha)  # type: ignore[arg-type]
        if x > 0:
            return [(1 - x) ** (5 * (last - i) / last) for i in range(last + 1)]
        return [(1 + x) ** (5 * i / last) for i in range(last + 1)]
    a = jnp.asarray(alpha)
    return [
        jnp.where(
            a > 0,
            (1 - a) ** (5 * (last - i) / last),
            (1 + a) ** (5 * i / last),
        )
        for i in range(last + 1)
    ]


def _check_factors(multipliers: Any) -> None:
    """Non-negative finite numbers, or arrays of them (one per slice),
    checked where they are concrete."""
    for m in jax.tree.leaves(multipliers):
        if np.ndim(m) and checks.is_concrete(m):
            values = np.asarray(m, np.float64)
            if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
                raise ValueError(
                    f"{checks.arg('multipliers')} must be finite and "
                    f"non-negative, got an array with {values.min()} to "
                    f"{values.max()}."
                )
        elif not np.ndim(m):
            checks.check_scalar(m, "multipliers", low=0.0)


def _broadcast(multipliers: Any, tree: Any) -> Any:
    """A factor per leaf of ``tree`` from a number or a prefix tree."""
    try:
        return jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: m, sub), multipliers, tree
        )
    except ValueError as err:
        raise ValueError(
            f"{checks.arg('multipliers')} must be a number or a prefix of "
            f"the params' structure, got {multipliers!r}: {err}"
        ) from None


def resolve_multipliers(
    multipliers: Multipliers,
    params: Any,
) -> Any:
    """A factor for every leaf of ``params``."""
    tree = multipliers(params) if callable(multipliers) else multipliers
    _check_factors(tree)
    return _broadcast(tree, params)


def _scale_leaf(u: jax.Array, m: Any) -> jax.Array:
    dtype = sm.reduction_dtype(u.dtype)
    return (u.astype(dtype) * jnp.asarray(m, dtype)).astype(u.dtype)


@checks.public
def scale_by_layer_multipliers(
    multipliers: Multipliers,
) -> optax.GradientTransformation:
    """Multiplies each layer's update by its own factor.

    This is how Layca gives each layer its own learning rate
    :math:`\\eta_l = \\rho(t) \\, m_l`.

    Args:
      multipliers: a number (every layer), a pytree of numbers whose
        structure is a prefix of the params (one factor per subtree), or a
        callable mapping the params (the layers, under
        :func:`layca_optax.layca`) to such a pytree, called at each update
        with the current params. Factors must be finite and non-negative.

    Returns:
      A :class:`optax.GradientTransformation`. It needs ``params`` only when
      ``multipliers`` is a callable.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> params = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
      >>> tx = layca_optax.scale_by_layer_multipliers({"a": 1.0, "b": 0.5})
      >>> out, _ = tx.update(params, tx.init(params), params)
      >>> out["b"]
      Array([[0.5, 0.5],
             [0.5, 0.5]], dtype=float32)

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019 (Algorithm 1's
      layerwise rates; Eq. 1 via :func:`depth_multipliers`).
    """
    if checks.checking():  # not when layca has checked them
        check_multipliers(multipliers, None)

    def init_fn(params):
        check_multipliers(multipliers, params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        factors = layer_factors(multipliers, updates, params)
        return jax.tree.map(_scale_leaf, updates, factors), state

    return optax.GradientTransformation(init_fn, update_fn)


def check_multipliers(multipliers: Multipliers, params: Any) -> None:
    """``ValueError`` for bad factors, or (given params) a bad structure.

    Callables are checked when they are called, at each update.
    """
    if callable(multipliers):
        return
    _check_factors(multipliers)
    if params is not None and jax.tree.leaves(params):
        _broadcast(multipliers, params)


def layer_factors(multipliers: Multipliers, updates: Any, params: Any) -> Any:
    """A factor per leaf of ``updates``; a callable is given ``params``."""
    if not callable(multipliers):
        return _broadcast(multipliers, updates)
    if params is None:
        raise checks.no_params_error()
    return resolve_multipliers(multipliers, params)


def ordered_depth_multipliers(
    alpha: jax.typing.ArrayLike,
    layer_order: Sequence[KeyPathLike] | str,
    axis: Any = None,
) -> Callable[[Any], Any]:
    """Eq. 1 multipliers keyed by path, as a callable of the layers' tree.

    ``layer_order`` lists every layer's path, input side first, or is the
    string ``"leaves"`` for pytree leaf order. A leaf that ``axis`` splits
    into slices may be listed whole (every slice gets its depth) or per
    slice (``path/i``, as ``forward_order(per_slice=True)`` names them):
    each slice then gets the multiplier of its own depth, as an array that
    broadcasts against the leaf's per-layer sums.
    """
    if isinstance(layer_order, str):
        if layer_order != "leaves":
            raise ValueError(
                f"{checks.arg('layer_order')} must be a sequence of key paths "
                f"or the string 'leaves', got {layer_order!r}."
            )
        order = None
    elif not isinstance(layer_order, Sequence):
        raise ValueError(
            f"{checks.arg('layer_order')} must be a list or tuple of the "
            "layers' key paths, input side first (a set has no order), or "
            f"the string 'leaves', got {layer_order!r}."
        )
    else:
        bad = [p for p in layer_order if not _is_path(p)]
        if bad:
            raise ValueError(
                f"{checks.arg('layer_order')} must list key paths (strings "
                f"such as 'Dense_0/kernel', or JAX key paths), got {bad!r}."
            )
        order = [path_str(p) for p in layer_order]
        dups = sorted({p for p in order if order.count(p) > 1})
        if dups:
            raise ValueError(
                f"{checks.arg('layer_order')} lists {dups} more than once."
            )

    def fn(layers):
        flat = jax.tree_util.tree_flatten_with_path(layers)[0]
        paths = [path_str(p) for p, _ in flat]
        names = paths if order is None else order
        leaf_axes = axes_per_leaf(layers, axis)
        slices = [
            _slice_names(path, x, axes)
            for path, (_, x), axes in zip(paths, flat, leaf_axes, strict=True)
        ]
        position = {name: k for k, name in enumerate(names)}
        found = [[_find(s, position) for s in leaf] for leaf in slices]
        matched = {names[k] for leaf in found for k in leaf if k is not None}
        missing = sorted(set(names) - matched)
        omitted = [
            s
            for leaf, ks in zip(slices, found, strict=True)
            for s, k in zip(leaf, ks, strict=True)
            if k is None
        ]
        if missing or omitted:
            raise ValueError(
                f"{checks.arg('layer_order')} must list every layer exactly "
                f"once. Not layers: {missing}; layers left out: "
                f"{_short(omitted)}. Layers: {_short(paths)}."
                + _slice_hint(missing, omitted)
            )
        factors = depth_multipliers(alpha, len(names)) if names else []
        out = [
            _leaf_factors(x, axes, ks, factors)
            for (_, x), axes, ks in zip(flat, leaf_axes, found, strict=True)
        ]
        treedef: Any = jax.tree.structure(layers)
        return treedef.unflatten(out)

    return fn


def _is_path(p: Any) -> bool:
    """A str or a JAX key path (a tuple or list of keys)."""
    return isinstance(p, str) or (
        isinstance(p, tuple | list)
        and not any(isinstance(k, str | int) for k in p)
    )


def _slice_names(path: str, x: Any, axes: tuple[int, ...]) -> list[str]:
    """The names of the layers (slices) of one leaf, in C order, as
    :func:`rotation_metrics` writes them (``path/i/j``)."""
    kept = [n for a, n in enumerate(np.shape(x)) if a not in axes]
    return [
        path + "".join(f"/{i}" for i in index) for index in np.ndindex(*kept)
    ]


def _find(name: str, position: dict[str, int]) -> int | None:
    """The position of ``name`` or of its nearest listed prefix (a whole
    leaf ``path``, or ``path/i`` for the slices ``path/i/j``)."""
    while True:
        if name in position:
            return position[name]
        if "/" not in name or not name.rsplit("/", 1)[1].isdigit():
            return None
        name = name.rsplit("/", 1)[0]


def _short(names: list[str]) -> str:
    return (
        repr(names)
        if len(names) <= 12
        else f"{names[:12]} ... (+{len(names) - 12})"
    )


def _slice_hint(missing: list[str], omitted: list[str]) -> str:
    if not any(n.rsplit("/", 1)[-1].isdigit() for n in missing):
        return ""
    return (
        " It lists per-slice names (forward_order(per_slice=True)) that "
        "`axis` does not make layers: pass the same stacked rule as `axis` "
        "(axis=infer_stacked_axes(fn, params, ...) or stacked_axes(n))."
    )


def _leaf_factors(
    x: Any, axes: tuple[int, ...], ks: list[Any], factors: list[Any]
) -> Any:
    """One leaf's Eq. 1 factor, or an array of one factor per slice that
    broadcasts against its per-layer sums (the reduced axes kept as 1)."""
    if len(set(ks)) == 1:
        return factors[ks[0]]
    shape = [1 if a in axes else n for a, n in enumerate(np.shape(x))]
    if all(isinstance(f, float | int) for f in factors):
        return np.asarray([factors[k] for k in ks], np.float32).reshape(shape)
    return jnp.stack([jnp.asarray(factors[k]) for k in ks]).reshape(shape)


def product(a: Callable[[Any], Any], b: Multipliers) -> Callable[[Any], Any]:
    """The callable multipliers ``a(params) * b`` (``b`` broadcast)."""

    def fn(params):
        fa = resolve_multipliers(a, params)
        fb = resolve_multipliers(b, params)
        return jax.tree.map(lambda x, y: x * y, fa, fb)

    return fn
