"""Per-layer learning-rate multipliers, and the paper's depth rule (Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import optax

from layca_optax import _checks as checks, _sums as sm
from layca_optax._masks import KeyPathLike, leaf_paths, path_str


Multipliers: TypeAlias = float | jax.Array | Any | Callable[[Any], Any]
"""Per-layer factors: a number, a pytree of numbers that is a prefix of the
params, or a callable that maps the params to such a pytree."""


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
      num_layers: the number of layers :math:`L`, at least 1.

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
    """Non-negative finite numbers (checked where they are concrete)."""
    for m in jax.tree.leaves(multipliers):
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
) -> Callable[[Any], Any]:
    """Eq. 1 multipliers keyed by path, as a callable of the layers' tree.

    ``layer_order`` lists every layer's path, input side first, or is the
    string ``"leaves"`` for pytree leaf order.
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
        order = [path_str(p) for p in layer_order]
        dups = sorted({p for p in order if order.count(p) > 1})
        if dups:
            raise ValueError(
                f"{checks.arg('layer_order')} lists {dups} more than once."
            )

    def fn(layers):
        paths = leaf_paths(layers)
        names = paths if order is None else order
        missing = sorted(set(names) - set(paths))
        omitted = sorted(set(paths) - set(names))
        if missing or omitted:
            raise ValueError(
                f"{checks.arg('layer_order')} must list every layer exactly "
                f"once. Not layers: {missing}; layers left out: {omitted}. "
                f"Layers: {paths}."
            )
        factors = depth_multipliers(alpha, len(names)) if names else []
        by_path = dict(zip(names, factors, strict=True))
        return jax.tree_util.tree_map_with_path(
            lambda p, _: by_path[path_str(p)], layers
        )

    return fn


def product(a: Callable[[Any], Any], b: Multipliers) -> Callable[[Any], Any]:
    """The callable multipliers ``a(params) * b`` (``b`` broadcast)."""

    def fn(params):
        fa = resolve_multipliers(a, params)
        fb = resolve_multipliers(b, params)
        return jax.tree.map(lambda x, y: x * y, fa, fb)

    return fn
