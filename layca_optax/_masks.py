"""Which leaves are layers, and how a leaf's path is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import optax


KeyPathLike: TypeAlias = str | Sequence[Any]
"""A leaf's path: ``"Conv_0/kernel"`` or a JAX key path such as
``(DictKey('Conv_0'), DictKey('kernel'))``."""


def path_str(path: KeyPathLike) -> str:
    """Writes a key path as ``"a/b/c"``; strings are returned unchanged.

    A trailing ``.value`` attribute (the box of a Flax NNX ``Variable``) is
    dropped, so that ``nnx.state(model, nnx.Param)`` and its pure form
    (``nnx.as_pure``) give the same names (``"linear/kernel"``). These are
    the names of :func:`rotation_metrics`' keys, of ``layer_order`` and of
    :func:`forward_order`'s result.

    Args:
      path: a JAX key path (from :func:`jax.tree_util.tree_flatten_with_path`
        or ``tree_map_with_path``) or a string.

    Returns:
      The path as a ``/``-separated string (``jax.tree_util.keystr`` with
      ``simple=True``).

    Example:
      >>> import jax
      >>> import layca_optax
      >>> params = {"Dense_0": {"kernel": 0.0}}
      >>> (path, _), = jax.tree_util.tree_flatten_with_path(params)[0]
      >>> layca_optax.path_str(path)
      'Dense_0/kernel'

    References:
      JAX, `Working with pytrees: explicit key paths
      <https://docs.jax.dev/en/latest/working-with-pytrees.html>`_.
    """
    if isinstance(path, str):
        return path
    keys = tuple(path)
    if keys and keys[-1] == jax.tree_util.GetAttrKey("value"):
        keys = keys[:-1]
    return jax.tree_util.keystr(keys, simple=True, separator="/")


def leaf_paths(tree: Any) -> list[str]:
    """The ``"a/b/c"`` paths of a tree's leaves, in leaf order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [path_str(p) for p, _ in flat]


def default_layer_mask(params: Any) -> Any:
    """The default layer rule: leaves with ``ndim >= 2`` are layers.

    Conv and Dense kernels are layers; biases, BatchNorm and LayerNorm scales
    (vectors) and scalars are not. This matches the authors' code, which
    applies Layca to kernels only.

    Args:
      params: a pytree of arrays (only shapes are read).

    Returns:
      A pytree of Python bools with the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> params = {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)}
      >>> layca_optax.default_layer_mask(params)
      {'bias': False, 'kernel': True}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019; the authors' code
      (``ispgroupucl/layer-rotation-tools``) updates kernels only.
    """
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def resolve_mask(mask: optax.MaskOrFn, tree: Any, caller: str) -> Any:
    """A bool for every leaf of ``tree``; ``ValueError`` if ``mask`` is bad."""
    if mask is None:
        mask = default_layer_mask
    mask_tree = mask(tree) if callable(mask) else mask
    for flag in jax.tree.leaves(mask_tree):
        if not isinstance(flag, bool):
            raise ValueError(
                f"`{caller}(mask=...)` leaves must be Python bools (the mask "
                f"must be static), got {flag!r}."
            )
    try:
        return jax.tree.map(
            lambda flag, sub: jax.tree.map(lambda _: flag, sub),
            mask_tree,
            tree,
        )
    except ValueError as err:
        raise ValueError(
            f"`{caller}(mask=...)` must have the structure of the params or "
            f"a prefix of it, got {mask_tree!r}: {err}"
        ) from None
