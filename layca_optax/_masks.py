"""Which leaves are layers, and how a leaf's path is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _checks as checks


KeyPathLike: TypeAlias = str | Sequence[Any]
"""A leaf's path: ``"Conv_0/kernel"`` or a JAX key path such as
``(DictKey('Conv_0'), DictKey('kernel'))``."""


@checks.public
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
    if isinstance(path, bytes | bytearray) or not hasattr(path, "__iter__"):
        raise ValueError(
            f"{checks.arg('path')} must be a str or a JAX key path (a "
            f"sequence of keys), got {path!r}."
        )
    keys = tuple(path)
    if keys and keys[-1] == jax.tree_util.GetAttrKey("value"):
        keys = keys[:-1]
    return jax.tree_util.keystr(keys, simple=True, separator="/")


def shape_mismatch(flat: list, others: list) -> tuple | None:
    """The first ``(path, shape, other_shape)`` where a leaf of ``flat``
    (``(key path, leaf)`` pairs) and its partner in ``others`` differ in
    shape, the path written by :func:`path_str`; None if none do."""
    for (path, a), b in zip(flat, others, strict=True):
        if np.shape(a) != np.shape(b):
            return path_str(path), np.shape(a), np.shape(b)
    return None


def leaf_paths(tree: Any) -> list[str]:
    """The ``"a/b/c"`` paths of a tree's leaves, in leaf order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [path_str(p) for p, _ in flat]


LAYER_NAMES = frozenset({"kernel"})
"""Leaf names that are layers whatever their shape (Flax's kernels)."""

NOT_LAYER_NAMES = frozenset(
    {"bias", "scale", "embedding", "embeddings", "offset"}
)
"""Leaf names that are not layers whatever their shape: biases, norm scales
and offsets, embedding tables (Flax, Haiku), stacked or not."""


def leaf_name(path: Any) -> str:
    """The last key of a leaf's path (``"kernel"`` for ``"h/mlp/kernel"``)."""
    return path_str(path).rsplit("/", 1)[-1]


def _is_layer(path: Any, leaf: Any) -> bool:
    name = leaf_name(path)
    if name in LAYER_NAMES:
        return True
    if name in NOT_LAYER_NAMES:
        return False
    return jnp.ndim(leaf) >= 2


@checks.public
def default_layer_mask(params: Any) -> Any:
    """The default layer rule: kernels are layers, by name, then by shape.

    A leaf named ``kernel`` (Flax ``Dense``, ``Conv``, ``Einsum``, ...) is a
    layer; one named ``bias``, ``scale``, ``embedding``, ``embeddings`` or
    ``offset`` (biases, LayerNorm/BatchNorm scales and offsets, embedding
    tables) is not, whatever its shape, so that the stacked ``(L, d)``
    scales and biases of a scanned model and the ``(E, h)`` biases of
    experts are not rotated as layers. Leaves with other names (plain dicts,
    other libraries) are layers when ``ndim >= 2``. This matches the
    authors' code, which applies Layca to kernels only. To rotate an
    embedding table too, pass a mask, e.g.
    ``mask=lambda p: jax.tree_util.tree_map_with_path(lambda path, x:
    layca_optax.path_str(path).endswith(("kernel", "embedding")), p)``.

    Args:
      params: a pytree of arrays (only paths and shapes are read).

    Returns:
      A pytree of Python bools with the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> params = {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4),
      ...           "scale": jnp.ones((6, 4)), "w": jnp.zeros((4, 4))}
      >>> layca_optax.default_layer_mask(params)
      {'bias': False, 'kernel': True, 'scale': False, 'w': True}

    References:
      Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful
      indicator of generalization in deep networks?
      <https://arxiv.org/abs/1806.01603>`_, 2019; the authors' code
      (``ispgroupucl/layer-rotation-tools``) updates kernels only.
    """
    return jax.tree_util.tree_map_with_path(_is_layer, params)


def resolve_mask(mask: optax.MaskOrFn, tree: Any, name: str = "mask") -> Any:
    """A bool for every leaf of ``tree``; ``ValueError`` naming the argument
    ``name`` if ``mask`` is bad."""
    if mask is None:
        mask = default_layer_mask
    mask_tree = mask(tree) if callable(mask) else mask
    check_mask_leaves(mask_tree, name)
    try:
        return jax.tree.map(
            lambda flag, sub: jax.tree.map(lambda _: flag, sub),
            mask_tree,
            tree,
        )
    except ValueError as err:
        raise ValueError(
            f"{checks.arg(name)} must have the structure of the params or "
            f"a prefix of it, got {mask_tree!r}: {err}"
        ) from None


def check_mask_leaves(mask_tree: Any, name: str = "mask") -> None:
    """``ValueError`` unless every leaf of ``mask_tree`` is a Python bool;
    an array (or a single ``False``) is what ``optax.inject_hyperparams``
    makes of a mask that is not in ``static_args``."""
    hint = (
        f" Under optax.inject_hyperparams, pass `{name}` as static: "
        f"optax.inject_hyperparams({checks.caller()}, "
        f"static_args=({name!r},))."
    )
    for flag in jax.tree.leaves(mask_tree):
        if not isinstance(flag, bool):
            raise ValueError(
                f"{checks.arg(name)} leaves must be Python bools (they "
                f"must be static), got {flag!r}." + hint
            )
    if mask_tree is False:
        raise ValueError(
            f"`{checks.caller()}({name}=False)` makes no leaf a layer, so "
            "Layca would update nothing. Pass a tree of bools, a callable of "
            "the params, or None for the default rule." + hint
        )
