"""Axis rules read from the model: stacked layers and fan-in axes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from layca_optax import _checks as checks
from layca_optax._masks import path_str
from layca_optax.tracing._layout_walk import Use
from layca_optax.tracing._trace import walk


def _uses(fn: Any, params: Any, args: tuple, kwargs: dict) -> list:
    """Each leaf's first :class:`Use`, or None for a leaf never used."""
    walker = walk(fn, params, args, kwargs)
    n = len(jax.tree.leaves(params))
    return [walker.uses.get(i) for i in range(n)]


def _rule(x: Any, use: Use | None, fan_in: bool) -> Any:
    """One leaf's reduction axes: all but the stacked ones (``None`` for
    an unstacked leaf: one layer), or with ``fan_in`` the contracted ones."""
    ndim = np.ndim(x)
    stacked = use.stacked if use is not None else frozenset()
    if fan_in and use is not None and use.contracting:
        return tuple(sorted(use.contracting))
    if not stacked:
        return None
    return tuple(a for a in range(ndim) if a not in stacked)


def _map(params: Any, uses: list, fn: Callable) -> Any:
    """A tree like ``params`` with ``fn(leaf, use)`` at its leaves; the
    rules stay leaves (``None`` included)."""
    treedef: Any = jax.tree.structure(params)
    out = [fn(x, u) for x, u in zip(jax.tree.leaves(params), uses, strict=True)]
    return treedef.unflatten(out)


@checks.public
def infer_stacked_axes(
    fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> Any:
    """The :data:`Axis` rule of each leaf, read from the model: one layer
    per stacked slice.

    ``fn(params, *args, **kwargs)`` is traced to a jaxpr on abstract values
    (nothing is computed), as :func:`forward_order` does. A leaf whose
    first use is inside a ``lax.scan`` (``nnx.scan``, ``nn.scan``,
    ``lax.fori_loop``) that slices it keeps that leading axis; one indexed
    by a step (``w[i]``) keeps the indexed axis; one consumed by a
    ``dot_general`` with batch dimensions (experts under ``jax.vmap`` or
    ``nnx.vmap``, an ``einsum`` over experts) keeps those axes too. Every
    other axis is reduced over, whatever the kernel's rank: an
    ``nnx.MultiHeadAttention`` query kernel stacked to ``(L, d, H, hd)``
    gives ``L`` layers, stacked experts ``(L, E, d, f)`` give ``L * E``.
    A leaf used outside any scan (or never used) stays one layer
    (``None``).

    Args:
      fn: the model, called as ``fn(params, *args, **kwargs)``; see
        :func:`forward_order` for Flax Linen, Flax NNX and Equinox.
      params: the params (arrays or :class:`jax.ShapeDtypeStruct`).
      *args: the other arguments of ``fn``; array leaves are traced as
        abstract values, other leaves passed as they are.
      **kwargs: keyword arguments of ``fn``, as ``args``.

    Returns:
      A tree with the structure of ``params`` whose leaves are the rules
      (``None`` or a tuple of axes): pass it as ``axis`` to
      :func:`layca`, :func:`rotation_metrics`, :func:`track_rotation`.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> def model(p, x):
      ...   def block(h, w):
      ...     return jnp.tanh(jnp.einsum("bd,dhk->bhk", h, w).reshape(
      ...         h.shape)), None
      ...   h, _ = jax.lax.scan(block, x @ p["embed"], p["blocks"])
      ...   return h @ p["head"]
      >>> params = {"embed": jnp.ones((5, 8)), "blocks": jnp.ones((3, 8, 2, 4)),
      ...           "head": jnp.ones((8, 1))}
      >>> x = jax.ShapeDtypeStruct((4, 5), jnp.float32)
      >>> layca_optax.infer_stacked_axes(model, params, x)
      {'blocks': (1, 2, 3), 'embed': None, 'head': None}
    """
    uses = _uses(fn, params, args, kwargs)
    return _map(params, uses, lambda x, u: _rule(x, u, fan_in=False))


@checks.public
def infer_fan_in_axes(
    fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> Any:
    """The :data:`Axis` rule of each leaf that gives one layer per output
    unit, read from the contraction that consumes it.

    :func:`fan_in_axes` reduces all but the last axis, which is right for
    ``Dense`` ``(in, out)``, ``Conv`` ``(*window, in, out)`` and the
    attention output kernel ``(H, hd, d)``, but mixes heads on a query
    kernel ``(d, H, hd)`` (a ``DenseGeneral`` with several output axes).
    This traces ``fn`` as :func:`infer_stacked_axes` does and reduces each
    leaf over the axes that its first ``dot_general`` contracts (the input
    features), or a ``conv_general_dilated`` kernel over its input-feature
    and spatial axes: ``(d, H, hd)`` gives one layer per ``(head, unit)``,
    ``(L, d, H, hd)`` one per ``(block, head, unit)``. A leaf whose first
    use is not a contraction gets :func:`infer_stacked_axes`' rule.

    Args:
      fn: the model, called as ``fn(params, *args, **kwargs)``.
      params: the params (arrays or :class:`jax.ShapeDtypeStruct`).
      *args: the other arguments of ``fn``, as in :func:`forward_order`.
      **kwargs: keyword arguments of ``fn``.

    Returns:
      A tree with the structure of ``params`` whose leaves are the rules.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import layca_optax
      >>> def attend(p, x):  # x: (batch, d)
      ...   q = jnp.einsum("bd,dhk->bhk", x, p["query"])
      ...   return jnp.einsum("bhk,hkd->bd", q, p["out"])
      >>> params = {"query": jnp.ones((8, 2, 4)), "out": jnp.ones((2, 4, 8))}
      >>> x = jax.ShapeDtypeStruct((3, 8), jnp.float32)
      >>> layca_optax.infer_fan_in_axes(attend, params, x)
      {'out': (0, 1), 'query': (0,)}
    """
    uses = _uses(fn, params, args, kwargs)
    return _map(params, uses, lambda x, u: _rule(x, u, fan_in=True))


def _muon_numbers(name: str, path: str, x: Any, use: Use | None) -> Any:
    """One leaf's Muon dimension numbers from its first use."""
    ndim = np.ndim(x)
    stacked = use.stacked if use is not None else frozenset()
    rest = [a for a in range(ndim) if a not in stacked]
    if use is not None and use.contracting:
        reduction = sorted(use.contracting)
        output = [a for a in rest if a not in use.contracting]
    else:
        reduction, output = rest[:-1], rest[-1:]
    if not reduction or not output:
        raise ValueError(
            f"`{name}`: the layer {path!r} of shape "
            f"{np.shape(x)} is not a matrix per stacked slice (reduction "
            f"axes {reduction}, output axes {output}); Muon needs matrices. "
            "Route it to `other`."
        )
    return optax.contrib.MuonDimensionNumbers(
        reduction_axis=tuple(reduction), output_axis=tuple(output)
    )


@checks.public
def infer_muon_dimension_numbers(
    fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> Callable[[Any], Any]:
    """Muon's dimension numbers for each layer, read from the model.

    :func:`muon_dimension_numbers` makes a layer's matrix from its reduced
    axes (all but the last, by the last), which is a ``(d * H) x hd``
    matrix on a query kernel ``(d, H, hd)``. This traces ``fn`` as
    :func:`infer_stacked_axes` does: the axes that the layer's first
    ``dot_general`` contracts are the matrix's rows, the other unstacked
    axes its columns, and stacked axes (scan, experts) are Muon's batch
    axes: ``(L, d, H, hd)`` is ``L`` matrices of ``d x (H * hd)``. A leaf
    whose first use is not a contraction gets the rule of
    :func:`muon_dimension_numbers` over its unstacked axes.

    Args:
      fn: the model, called as ``fn(params, *args, **kwargs)``.
      params: the params (arrays or :class:`jax.ShapeDtypeStruct`).
      *args: the other arguments of ``fn``, as in :func:`forward_order`.
      **kwargs: keyword arguments of ``fn``.

    Returns:
      A callable of the (layers') params giving a tree of
      ``optax.contrib.MuonDimensionNumbers`` (looked up by path), for
      ``optax.contrib.scale_by_muon(weight_dimension_numbers=...)``.
      Layers that are not matrices per slice raise ``ValueError`` when it
      is called.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import layca_optax
      >>> def attend(p, x):
      ...   q = jnp.einsum("bd,dhk->bhk", x, p["query"]["kernel"])
      ...   return jnp.einsum("bhk,hkd->bd", q, p["out"]["kernel"])
      >>> params = {"query": {"kernel": jnp.ones((8, 2, 4))},
      ...           "out": {"kernel": jnp.ones((2, 4, 8))}}
      >>> x = jax.ShapeDtypeStruct((3, 8), jnp.float32)
      >>> numbers = layca_optax.infer_muon_dimension_numbers(attend, params, x)
      >>> numbers(params)["query"]["kernel"]
      MuonDimensionNumbers(reduction_axis=(0,), output_axis=(1, 2))
      >>> muon = optax.contrib.scale_by_muon(weight_dimension_numbers=numbers)
      >>> tx = layca_optax.layca(0.1, base=muon)
    """
    uses = _uses(fn, params, args, kwargs)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    by_path = {path_str(p): u for (p, _), u in zip(flat, uses, strict=True)}
    name = checks.caller()

    def numbers(layers: Any) -> Any:
        def one(path: Any, x: Any) -> Any:
            key = path_str(path)
            if key not in by_path:
                raise ValueError(
                    f"`{name}`: the layer {key!r} is not a leaf of the "
                    f"params it was traced with ({sorted(by_path)})."
                )
            return _muon_numbers(name, key, x, by_path[key])

        return jax.tree_util.tree_map_with_path(one, layers)

    return numbers
